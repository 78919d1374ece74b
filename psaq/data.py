"""Datasets and input specs: scikit-learn's digits (the embedded default) and ImageNet-style folders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from psaq.errors import DatasetError

DIGITS_SIZE = 32  # 8×8 digits upsampled so that patch 8 gives 16 tokens
DIGITS_MEAN = (0.5, 0.5, 0.5)
DIGITS_STD = (0.5, 0.5, 0.5)
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # the split is fixed; training seeds vary the model, not the test set
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: (C, H, W), normalization and class count."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int

    def pixel_bounds(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel bounds, shape (1, C, 1, 1), of pixels in [0, 1] after normalization."""
        mean = torch.tensor(self.mean, device=device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device, dtype=dtype).view(1, -1, 1, 1)
        return (0.0 - mean) / std, (1.0 - mean) / std


DIGITS_SPEC = InputSpec((3, DIGITS_SIZE, DIGITS_SIZE), DIGITS_MEAN, DIGITS_STD, 10)


def _digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (n, 1, 8, 8) in [0, 1]
    images = F.interpolate(images, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    images = images.clamp(0, 1).repeat(1, 3, 1, 1)
    mean = torch.tensor(DIGITS_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DIGITS_STD).view(1, 3, 1, 1)
    return (images - mean) / std, torch.tensor(digits.target, dtype=torch.long)


def digits_split(split: str) -> TensorDataset:
    """The deterministic stratified train/test split of scikit-learn's 1,797 digits (1437/360)."""
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise DatasetError(f"digits split must be 'train' or 'test', got '{split}'")
    images, labels = _digits_tensors()
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels.numpy(),
        random_state=DIGITS_SPLIT_SEED,
    )
    idx = torch.as_tensor(idx_train if split == "train" else idx_test)
    return TensorDataset(images[idx], labels[idx])


def check_image_folder(root: str | Path) -> Path:
    """An ImageNet-style folder: ``root/<class>/<image>``; refuse anything else, naming the path."""
    path = Path(root)
    if not path.exists():
        raise DatasetError(f"dataset path '{path}' does not exist")
    if not path.is_dir():
        raise DatasetError(f"dataset path '{path}' is not a folder of class folders")
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"dataset path '{path}' has no class folders (expected {path}/<class>/<image>)")
    if not any(f.suffix.lower() in IMAGE_EXTENSIONS for c in classes for f in c.rglob("*")):
        raise DatasetError(f"dataset path '{path}' has class folders but no images in them")
    return path


def _timm_data_config(model: torch.nn.Module) -> dict:
    """timm's data config, with the input size the model was built with (``img_size`` overrides
    do not update the pretrained config)."""
    from timm.data import resolve_data_config

    args = {}
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        in_chans = getattr(model.patch_embed.proj, "in_channels", 3)
        args["input_size"] = (in_chans, *tuple(img_size))
    return resolve_data_config(args, model=model)


def image_folder(root: str | Path, model: torch.nn.Module) -> Dataset:
    """Images evaluated with the model's own timm eval transform (resize, crop, normalize)."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    path = check_image_folder(root)
    transform = create_transform(**_timm_data_config(model), is_training=False)
    return ImageFolder(str(path), transform=transform)


def spec_from_timm(model: torch.nn.Module) -> InputSpec:
    """The input size and normalization from the model's pretrained config and its build arguments."""
    cfg = _timm_data_config(model)
    return InputSpec(tuple(cfg["input_size"]), tuple(cfg["mean"]), tuple(cfg["std"]), model.num_classes)


def loader(dataset: Dataset, batch_size: int = 128, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def first_images(dataset: Dataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images drawn without replacement by ``seed`` (the `real` calibration baseline)."""
    if n > len(dataset):
        raise DatasetError(f"asked for {n} real images but the split holds {len(dataset)}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(dataset), generator=g)[:n].tolist()
    items = [dataset[i] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])
