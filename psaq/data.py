"""What a run reads: a built-in dataset by name (``psaq.datasets``) or image folders, checked against the model.

``open_data`` resolves what a run evaluates on and where the ``real`` baseline draws its
calibration images, checked against the model's input spec; its ``fingerprint`` changes with
any change of the images or labels, so cached results keyed by it never go stale.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import psaq.datasets.builtin  # noqa: F401 - registers digits and Fashion-MNIST
from psaq.datasets import DATASETS
from psaq.errors import DatasetError
from psaq.folders import resolve_roots, scan_class_folders, shared_files
from psaq.input_spec import InputSpec

RealSource = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]  # (n, seed) → (images, labels)


def eval_transform(spec: InputSpec):
    """The model's own evaluation transform: resize, centre crop, to tensor, its normalization."""
    from timm.data import create_transform

    return create_transform(input_size=spec.input_size, interpolation=spec.interpolation, mean=spec.mean,
                            std=spec.std, crop_pct=spec.crop_pct, is_training=False)


class FolderDataset(Dataset):
    """Scanned class folders read with PIL, as the model's channels ask (``mode``: RGB, or L for a
    one-channel model), and the model's evaluation transform."""

    def __init__(self, folders, transform, mode: str = "RGB"):
        self.folders, self.transform, self.mode = folders, transform, mode
        # images whose EXIF Orientation tag asks for a rotation or a mirror: read as stored, as the
        # official code's loader (torchvision's, PIL without exif_transpose) reads them; counted so
        # that a run can say so
        self.rotated: set[str] = set()
        # sha256 of the bytes each image was decoded from, by absolute path: what a result computed
        # from them is checked against (``psaq.sources.require_unchanged``)
        self.read_hashes: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.folders.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.folders.samples[i]
        try:
            with open(path, "rb") as f:
                raw = f.read()
            self.read_hashes[os.path.abspath(path)] = hashlib.sha256(raw).hexdigest()
            with Image.open(io.BytesIO(raw)) as img:
                if img.getexif().get(EXIF_ORIENTATION, 1) not in (1, 0):
                    self.rotated.add(path)
                image = as_8bit(img, path, self.mode)
        except Image.DecompressionBombError as exc:  # not an OSError: it would surface as a traceback
            raise DatasetError(f"image '{path}' is too large to read safely ({exc}); resize it, or raise "
                               "PIL.Image.MAX_IMAGE_PIXELS if the size is intended") from exc
        except OSError as exc:
            raise DatasetError(f"image '{path}' cannot be read: {exc}") from exc
        return self.transform(image), label


HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
EXIF_ORIENTATION = 0x0112


def image_mode(spec: InputSpec) -> str:
    """How image files are read for a model: RGB for 3 channels, L (gray) for 1; others are refused."""
    channels = spec.input_size[0]
    if channels not in (1, 3):
        raise DatasetError(f"the model takes {channels}-channel images; psaq reads image folders as gray (1 channel) "
                           "or RGB (3 channels)")
    return "RGB" if channels == 3 else "L"


def as_rgb8(img, path: str):
    return as_8bit(img, path, "RGB")


def as_8bit(img, path: str, mode: str = "RGB"):
    """The image as 8-bit ``mode`` (RGB or L), scaled from what it holds: PIL's ``convert`` clips
    16-bit values at 255 (a 16-bit PNG turns almost white) and truncates floats in [0, 1] to 0 or 1."""
    from PIL import Image

    if img.mode in HIGH_BIT_MODES or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if img.mode == "F":
            if not (np.isfinite(a).all() and lo >= 0.0 and hi <= 1.0):
                raise DatasetError(f"image '{path}' holds floating-point pixels in [{lo:g}, {hi:g}]; psaq reads float "
                                   "images with pixels in [0, 1] (or 8- and 16-bit integer images)")
            a = a * 255.0
        else:
            if lo < 0 or hi > 65535:
                raise DatasetError(f"image '{path}' holds integer pixels in [{lo:g}, {hi:g}]; psaq reads 8- and 16-bit "
                                   "images (0 to 65535)")
            a = a / 257.0  # 65535 → 255
        return Image.fromarray(np.round(a).astype(np.uint8), mode="L").convert(mode)
    return img.convert(mode)


@dataclass
class DataSource:
    """What a run evaluates on, and where ``real`` draws calibration images (None: nowhere)."""

    eval_set: Dataset
    calib_set: Dataset | None
    eval_desc: str
    calib_desc: str
    extra: dict = field(default_factory=dict)


def _builtin_source(name: str, spec: InputSpec) -> DataSource:
    entry = DATASETS.get(name)
    # a headless backbone takes any class count: its labels serve the k-NN evaluation only
    classes = entry.spec.num_classes if spec.headless else spec.num_classes
    if (entry.spec.input_size, entry.spec.mean, entry.spec.std, entry.spec.num_classes) != \
            (spec.input_size, spec.mean, spec.std, classes):
        raise DatasetError(f"dataset '{name}' gives {entry.spec.num_classes} classes of {entry.spec.input_size} images "
                           f"normalized with mean {entry.spec.mean}, std {entry.spec.std}; the model takes "
                           f"{spec.num_classes} classes of {spec.input_size} with mean {spec.mean}, std {spec.std}")
    test, train = entry.split("test"), entry.split("train")
    return DataSource(test, train, f"{name} test split ({len(test)} images)", f"{name} train split ({len(train)} images)")


def is_builtin(name: str, calib_dataset: str | None = None, given: bool = True) -> bool:
    """Whether ``name`` is a built-in dataset; refuses a calibration folder next to one, for every
    method (a flag that would be ignored is an error, not a no-op), and a name the user ``given``
    that is also a folder here (the model's own default is never a folder)."""
    if given and name in DATASETS and Path(name).exists():
        raise DatasetError(f"'{name}' names both the built-in dataset and the folder ./{name} here; write "
                           f"./{name} (or its full path) for the folder, or run from another folder for the built-in one")
    if name in DATASETS:
        if calib_dataset:
            raise DatasetError(f"--calib-dataset (runtime.calib_dataset) applies to image folders; '{name}' brings "
                               "its own train split")
        return True
    return False


def open_data(spec: InputSpec, dataset: str | None, calib_dataset: str | None = None,
              default: str | None = None) -> DataSource:
    """``dataset``: a built-in name, an image-folder path, or None for the model's ``default``.

    A folder is read with the model's own normalization, size and resize rule; its class folders
    must match the model's outputs. A root holding ``val/`` and ``train/`` evaluates on ``val/``
    and calibrates ``real`` on ``train/``; any other folder is the evaluation set only, and
    ``calib_dataset`` names the folder ``real`` draws from."""
    name = dataset or default
    if name is None:
        raise DatasetError("this model has no built-in dataset: pass --dataset PATH (a folder of class folders, "
                           "or a root holding train/ and val/)")
    if is_builtin(name, calib_dataset, given=dataset is not None):
        return _builtin_source(name, spec)
    roots = resolve_roots(name, calib_dataset)
    transform, mode = eval_transform(spec), image_mode(spec)
    evaluation = scan_class_folders(roots.eval_dir, spec.num_classes, spec.class_names)
    calib = calib_set = None
    calib_desc = "none: the real mode needs --calib-dataset PATH (or a dataset root with train/)"
    if roots.calib_dir is not None:
        if roots.calib_dir.resolve() == roots.eval_dir.resolve():
            raise DatasetError(f"'{roots.calib_dir}' is the evaluation folder: calibrating on test images would "
                               "inflate the real baseline; pass a training folder")
        calib = scan_class_folders(roots.calib_dir, spec.num_classes, spec.class_names)
        linked = shared_files(calib, evaluation)
        if linked:
            raise DatasetError(f"{len(linked)} image(s) of the calibration folder '{roots.calib_dir}' are files of the "
                               f"evaluation folder (links or mounts), e.g. '{linked[0][0]}' is '{linked[0][1]}': "
                               "calibrating on test images would inflate the real baseline")
        if spec.headless and calib.classes != evaluation.classes:
            raise DatasetError(f"the class folders of '{roots.calib_dir}' and '{roots.eval_dir}' differ "
                               f"({len(calib.classes)} against {len(evaluation.classes)}, e.g. "
                               f"'{sorted(set(calib.classes) ^ set(evaluation.classes))[0]}'): a headless backbone is "
                               "scored by k-NN, whose training images must carry the test images' labels")
        calib_set = FolderDataset(calib, transform, mode)
        calib_desc = f"{calib.root} ({len(calib.samples)} images)"
    skipped = (f"; {len(evaluation.skipped)} link(s) out of their class folder skipped, e.g. {evaluation.skipped[0]}"
               if evaluation.skipped else "")
    return DataSource(FolderDataset(evaluation, transform, mode), calib_set,
                      f"{evaluation.root} ({len(evaluation.samples)} images, {len(evaluation.classes)} classes{skipped})",
                      calib_desc)


def spec_from_timm(model: torch.nn.Module, name: str | None = None) -> InputSpec:
    """The input size and normalization from the model's pretrained config and its build
    arguments (``img_size`` overrides do not update the pretrained config), with the official
    code's evaluation crop for its models."""
    from timm.data import resolve_data_config

    args = {}
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:
        in_chans = getattr(model.patch_embed.proj, "in_channels", 3)
        args["input_size"] = (in_chans, *tuple(img_size))
    cfg = resolve_data_config(args, model=model)
    arch = name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    crop_pct = official_crop_pct(arch) or cfg.get("crop_pct", 1.0)
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    channels = cfg["input_size"][0]
    if channels == 1 and len(mean) == 3:
        # timm keeps the RGB statistics for an in_chans=1 model; its pretrained 1-channel weights sum
        # the RGB filters (timm's adapt_input_conv), so a gray pixel stands for R = G = B: one mean
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    return InputSpec(tuple(cfg["input_size"]), mean, std, model.num_classes,
                     crop_pct=crop_pct, interpolation=cfg.get("interpolation", "bicubic"))


# The official code picks the evaluation crop by the model type, the first word of the model's
# name (`deit_small` → `deit`): DeiT at resize 256 / crop 224 (crop 0.875), where timm's DeiT
# configs say 0.9; Swin and ViT at 0.9, as timm has them. A pretrained tag (`.fb_in1k`) or a hub
# prefix does not change the type.
OFFICIAL_EVAL_CROP = {"deit": 0.875}


def official_crop_pct(arch: str | None) -> float | None:
    if not arch:
        return None
    name = arch.rsplit("/", 1)[-1].rsplit(":", 1)[-1].split(".", 1)[0]
    return OFFICIAL_EVAL_CROP.get(name.split("_", 1)[0])


def loader(dataset: Dataset, batch_size: int = 128, num_workers: int = 0) -> DataLoader:
    """Batches in order. Tensors in memory come as slices of them (views, nothing copied): item by
    item and stacked, a 10,000-image set spent 30 ms on the batches and its model ran colder on
    fresh copies (psaq float 6,500 against a plain loop's 7,800 images/s on a 28-px ViT)."""
    if isinstance(dataset, TensorDataset) and num_workers == 0:
        batches = [slice(a, a + batch_size) for a in range(0, len(dataset), batch_size)]
        return DataLoader(dataset, sampler=batches, batch_size=None)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


def drawn_indices(dataset: Dataset, n: int, seed: int) -> list[int]:
    """Which ``n`` images the `real` baseline draws, without replacement, by ``seed``."""
    if n > len(dataset):
        raise DatasetError(f"asked for {n} real images but the split holds {len(dataset)}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(len(dataset), generator=g)[:n].tolist()


def first_images(dataset: Dataset, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images drawn without replacement by ``seed`` (the `real` calibration baseline)."""
    items = [dataset[i] for i in drawn_indices(dataset, n, seed)]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])
