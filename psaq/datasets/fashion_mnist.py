"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package, read with torchvision's reader; registers
itself as the built-in dataset ``fashion-mnist``.

60,000 train and 10,000 test images, 28×28 gray, 10 classes. The package's gzip files are
unpacked once into a cache (``$PSAQ_DATA_CACHE`` or ``~/.cache/psaq``) and checked against the
content psaq was measured on; a missing, truncated or changed file is refused in one line.
"""

from __future__ import annotations

import gzip
import os
import shutil
from functools import lru_cache
from pathlib import Path

from torch.utils.data import TensorDataset

from psaq.content import cache_root, file_sha256
from psaq.datasets import DATASETS, BuiltinDataset
from psaq.errors import DatasetError
from psaq.input_spec import InputSpec

MEAN, STD = 0.2860, 0.3530  # of the 60,000 training images in [0, 1]: what every Fashion-MNIST model here sees

DEBIAN_PACKAGE = "dataset-fashion-mnist"
SOURCE = Path(os.environ.get("PSAQ_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
# sha256 of the unpacked files (the idx format torchvision reads), as Debian ships them
RAW_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def unpacked(source: Path | None = None, cache: Path | None = None) -> Path:
    """The torchvision root holding ``FashionMNIST/raw/<idx files>``, unpacked and verified."""
    source = source or SOURCE
    raw = (cache or cache_root()) / "fashion-mnist" / "FashionMNIST" / "raw"
    for name, want in RAW_SHA256.items():
        target = raw / name
        if target.is_file() and file_sha256(target) == want:
            continue
        packed = source / f"{name}.gz"
        if not packed.is_file():
            raise DatasetError(f"Fashion-MNIST file '{packed}' is missing: install Debian's {DEBIAN_PACKAGE} "
                               f"(sudo apt-get install {DEBIAN_PACKAGE}), or point PSAQ_FASHION_MNIST at its files")
        raw.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.{os.getpid()}.partial")
        try:
            with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as exc:
            tmp.unlink(missing_ok=True)
            raise DatasetError(f"Fashion-MNIST file '{packed}' is truncated or corrupt ({exc}); reinstall "
                               f"{DEBIAN_PACKAGE}") from exc
        if file_sha256(tmp) != want:
            tmp.unlink(missing_ok=True)
            raise DatasetError(f"Fashion-MNIST file '{packed}' does not hold the data psaq was measured on "
                               f"(sha256 differs); reinstall {DEBIAN_PACKAGE}")
        os.replace(tmp, target)
    return raw.parent.parent


@lru_cache(maxsize=2)
def fashion_split(split: str) -> TensorDataset:
    """(N, 1, 28, 28) normalized images and labels, read by torchvision's FashionMNIST."""
    from torchvision.datasets import FashionMNIST

    if split not in ("train", "test"):
        raise DatasetError(f"Fashion-MNIST split must be 'train' or 'test', got '{split}'")
    data = FashionMNIST(str(unpacked()), train=split == "train", download=False)
    images = data.data.unsqueeze(1).float().div(255.0)
    images = (images - MEAN) / STD
    return TensorDataset(images, data.targets.long())


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_SPEC = InputSpec((1, 28, 28), (MEAN,), (STD,), 10, class_names=FASHION_CLASSES)
DATASETS.register("fashion-mnist")(BuiltinDataset(fashion_split, FASHION_SPEC,
                                                  "Fashion-MNIST, 10,000 test / 60,000 train (Debian's package)"))
