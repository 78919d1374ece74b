"""Built-in datasets by name, each in one file that registers itself (``digits.py``,
``fashion_mnist.py``); ``builtin.py`` imports them all. Image folders are not built in: ``psaq.folders``
reads them and ``psaq.data.open_data`` checks them against the model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from torch.utils.data import TensorDataset

from psaq.input_spec import InputSpec
from psaq.registry import Registry


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset psaq ships or installs: normalized tensors for one input spec."""

    split: Callable[[str], TensorDataset]  # "train" | "test" → (images, labels)
    spec: InputSpec
    description: str

    @property
    def module(self) -> str:
        """The module that reads this dataset: its code keys the results of models trained on it."""
        return self.split.__module__


DATASETS: Registry[BuiltinDataset] = Registry("dataset")  # filled by each dataset's own file


@lru_cache(maxsize=8)
def builtin_fingerprint(name: str, split: str) -> str:
    images, labels = DATASETS.get(name).split(split).tensors
    h = hashlib.sha256(np.ascontiguousarray(images.numpy()).tobytes())
    h.update(np.ascontiguousarray(labels.numpy()).tobytes())
    return f"{name}:{split}:{h.hexdigest()[:16]}"
