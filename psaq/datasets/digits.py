"""scikit-learn's 8×8 digits as a built-in dataset: 1,797 images, a fixed stratified 1,437 / 360 split,
upsampled to 32×32 RGB so that a ViT with patch 8 sees 16 tokens. Registers itself as ``digits``.

The file scikit-learn ships is checked against the content psaq was measured on, so the dataset is
fixed by this code: no stage has to hash it again (DVC can leave the ``data`` stage alone).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from psaq.datasets import DATASETS, BuiltinDataset
from psaq.content import file_sha256
from psaq.errors import DatasetError
from psaq.input_spec import InputSpec

DIGITS_SIZE = 32  # 8×8 digits upsampled so that patch 8 gives 16 tokens
DIGITS_MEAN = (0.5, 0.5, 0.5)
DIGITS_STD = (0.5, 0.5, 0.5)
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # the split is fixed; training seeds vary the model, not the test set


SOURCE_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"  # sklearn/datasets/data/digits.csv.gz


@lru_cache(maxsize=1)
def checked_source() -> Path:
    """scikit-learn's digits file, refused in one line when its content is not what psaq knows."""
    path = Path(str(resources.files("sklearn.datasets.data") / "digits.csv.gz"))
    if not path.is_file():
        raise DatasetError(f"scikit-learn's digits file '{path}' is missing: reinstall scikit-learn (make setup)")
    if file_sha256(path) != SOURCE_SHA256:
        raise DatasetError(f"scikit-learn's digits file '{path}' does not hold the images psaq was measured on "
                           "(sha256 differs): reinstall the scikit-learn version pyproject.toml pins (make setup)")
    return path


DIGITS_CLASSES = tuple(str(d) for d in range(10))
DIGITS_SPEC = InputSpec((3, DIGITS_SIZE, DIGITS_SIZE), DIGITS_MEAN, DIGITS_STD, 10, class_names=DIGITS_CLASSES)


def _digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    checked_source()
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


DATASETS.register("digits")(BuiltinDataset(digits_split, DIGITS_SPEC, "scikit-learn's digits, 360 test / 1,437 train"))
