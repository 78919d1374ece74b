"""Weights psaq ships for its own models: what ``pretrained`` means for a psaq model name.

psaq trains its models itself (``psaq train``), which for ``fashion-vit`` takes 10-17 minutes on
two cores. So that the default run starts from a trained model at once, the repository holds
the file that training wrote for one seed, and this table pins its content: a file whose bytes
differ from the hash below is refused, never loaded. The file records its own recipe in its
metadata (``train_config``: the training settings, ``test_top1``); the architecture is the
model's registered one with no overrides. ``psaq train --model NAME --seed N`` retrains it from
that recipe and says whether the result equals the shipped tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psaq.content import file_sha256
from psaq.errors import CheckpointError, ConfigError

WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ShippedWeights:
    model: str
    train_seed: int
    file: str  # in psaq/models/weights/
    sha256: str  # of the file's bytes
    test_top1: float  # on the model's own test split, as training measured it

    @property
    def path(self) -> Path:
        return WEIGHTS / self.file


# trained with `psaq train --model fashion-vit --seed 0` (2026-12-06, Intel Xeon, 2 threads, 10.7 min)
SHIPPED = {
    ("fashion-vit", 0): ShippedWeights("fashion-vit", 0, "fashion-vit-m0.safetensors",
                                       "751a0ee007373f02e0e47e482c3da81244031b640784a9c1c41728083411774a", 87.54),
}


def shipped_seeds(model: str) -> list[int]:
    return sorted(seed for name, seed in SHIPPED if name == model)


def shipped_weights(model: str, train_seed: int, model_args: dict | None = None) -> Path:
    """The verified shipped file of ``model`` for ``train_seed``; refused in one line when psaq ships
    none, when ``model_args`` change the architecture it was trained as, or when its bytes changed."""
    entry = SHIPPED.get((model, train_seed))
    if entry is None:
        seeds = shipped_seeds(model)
        have = f"for train seed {', '.join(map(str, seeds))} only" if seeds else "none"
        raise ConfigError(f"psaq ships trained weights of '{model}' {have}; set pretrained: false (no --pretrained) "
                          f"to train train seed {train_seed} from its recipe")
    if model_args:
        raise ConfigError(f"the shipped weights of '{model}' are for its registered architecture; model_args "
                          f"{model_args} change it: set pretrained: false to train that architecture")
    if not entry.path.is_file():
        raise CheckpointError(f"the shipped weights {entry.path} are missing; restore them (git checkout -- "
                              f"{entry.path.name}) or retrain with psaq train --model {model} --seed {train_seed}")
    actual = file_sha256(entry.path)
    if actual != entry.sha256:
        raise CheckpointError(f"the shipped weights {entry.path} are not the file psaq was measured with (sha256 "
                              f"{actual[:12]}…, expected {entry.sha256[:12]}…); restore them with git checkout")
    return entry.path
