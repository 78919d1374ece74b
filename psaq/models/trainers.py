"""How psaq trains its own models (``digits-vit``, ``fashion-vit``, ``fashion-swin``) when the
user gives no weights: a trainer and its training defaults per registered name.

Apart from the registry on purpose: loading a model does not import the training code, so a
change to training re-keys only the model stage of psaq's trained models (the only stage that
imports this), never the sample sets or results of a user's checkpoint or a timm model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from psaq.datasets.digits import DIGITS_CLASSES, digits_split
from psaq.datasets.fashion_mnist import FASHION_CLASSES, fashion_split
from psaq.models import fashion
from psaq.models.digits import digits_vit
from psaq.models.train import TrainConfig, TrainResult, checkpoint_metadata, train_classifier
from psaq.registry import Registry

DIGITS_TRAIN = dict(epochs=60, batch_size=64, lr=2e-3, weight_decay=0.05, warmup_epochs=3, label_smoothing=0.1,
                    max_shift_px=2, flip=False)  # no flips: a mirrored digit is another symbol
_FASHION_COMMON = dict(batch_size=128, lr=2e-3, weight_decay=0.05, warmup_epochs=1, label_smoothing=0.1,
                       max_shift_px=2, flip=True)
FASHION_TRAIN = {"fashion-vit": dict(_FASHION_COMMON, epochs=15), "fashion-swin": dict(_FASHION_COMMON, epochs=10)}


@dataclass(frozen=True)
class Trainer:
    # (resolved TrainConfig, model_args, progress) → (TrainResult, checkpoint metadata)
    train: Callable[[TrainConfig, dict | None, bool], tuple[TrainResult, dict[str, str]]]
    defaults: dict = field(default_factory=dict)  # the TrainConfig values a None field takes


TRAINERS: Registry[Trainer] = Registry("trainable model")


def train_digits_vit(cfg: TrainConfig = TrainConfig(), device="cpu", progress: bool = True,
                     model_args: dict | None = None) -> TrainResult:
    """``model_args`` overrides the architecture (tests train a shallower one in seconds)."""
    cfg = cfg.resolved(DIGITS_TRAIN)
    return train_classifier(lambda: digits_vit(**(model_args or {})), digits_split("train"), digits_split("test"),
                            cfg, "digits-vit", device, progress)


def _digits(cfg: TrainConfig, model_args: dict | None = None, progress: bool = True):
    cfg = cfg.resolved(DIGITS_TRAIN)
    result = train_digits_vit(cfg, progress=progress, model_args=model_args)
    return result, checkpoint_metadata(result, cfg, DIGITS_CLASSES)


def _fashion(name: str):
    def train(cfg: TrainConfig, model_args: dict | None = None, progress: bool = True):
        cfg = cfg.resolved(FASHION_TRAIN[name])
        result = train_classifier(lambda: fashion.ARCHITECTURES[name](**(model_args or {})), fashion_split("train"),
                                  fashion_split("test"), cfg, name, "cpu", progress)
        return result, checkpoint_metadata(result, cfg, FASHION_CLASSES)

    return train


TRAINERS.register("digits-vit")(Trainer(_digits, DIGITS_TRAIN))
for _name in fashion.ARCHITECTURES:
    TRAINERS.register(_name)(Trainer(_fashion(_name), FASHION_TRAIN[_name]))
