"""Training psaq's own models (digits-vit, fashion-vit, fashion-swin) on their built-in datasets.

Deterministic given the seed on the CPU: seeded init, seeded shuffles and augmentation.
AdamW with a linear warm-up and cosine decay, label smoothing, random shifts (and horizontal
flips where the data allows them).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from psaq import cancel
from psaq.errors import ConfigError, check_seed
from psaq.models.checkpoint import CLASS_NAMES_KEY


@dataclass(frozen=True)
class TrainConfig:
    """``None`` takes the model's own default (``psaq.models.trainers.Trainer.defaults``)."""

    seed: int = 0
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: int | None = None
    label_smoothing: float | None = None
    max_shift_px: int | None = None  # random translation (a wrap-around roll)
    flip: bool | None = None  # random horizontal flips
    threads: int | None = None  # None keeps torch's default

    def __post_init__(self) -> None:
        check_seed("train.seed", self.seed)
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"train.{name} must be a positive integer, got {value!r}")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")
        # each range is where the value means what its name says; outside it, training fails
        # mid-way with a traceback or (label smoothing > 1) optimizes a nonsense target
        for name, low, high in (("weight_decay", 0.0, math.inf), ("label_smoothing", 0.0, 1.0)):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not low <= value <= high):
                raise ConfigError(f"train.{name} must be a number from {low:g} to {high:g}, got {value!r}")
        for name in ("warmup_epochs", "max_shift_px"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"train.{name} must be an integer of 0 or more, got {value!r}")
        if self.flip is not None and not isinstance(self.flip, bool):
            raise ConfigError(f"train.flip must be true or false, got {self.flip!r}")

    def resolved(self, defaults: dict) -> TrainConfig:
        """Every ``None`` replaced by the model's default: what the key and the checkpoint record."""
        filled = {f.name: defaults.get(f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is None}
        missing = [k for k, v in filled.items() if v is None and k != "threads"]
        if missing:
            raise ConfigError(f"train: no value for {', '.join(missing)}")
        return dataclasses.replace(self, **filled)


@dataclass
class TrainResult:
    model: nn.Module
    test_top1: float
    wall_s: float
    losses: list[float]


def _lr_at(epoch_progress: float, cfg: TrainConfig) -> float:
    if epoch_progress < cfg.warmup_epochs:
        return cfg.lr * epoch_progress / cfg.warmup_epochs
    t = (epoch_progress - cfg.warmup_epochs) / max(1e-9, cfg.epochs - cfg.warmup_epochs)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t))) * cfg.lr


@torch.no_grad()
def top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 512) -> float:
    model.eval()
    pred = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(y), batch)])
    return 100.0 * float((pred == y).float().mean())


def train_classifier(model_fn: Callable[[], nn.Module], train: torch.utils.data.TensorDataset,
                     test: torch.utils.data.TensorDataset, cfg: TrainConfig, name: str,
                     device: str | torch.device = "cpu", progress: bool = True) -> TrainResult:
    """Train ``model_fn()`` on ``train`` with a fully resolved ``cfg``; report top-1 on ``test``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    model = model_fn().to(device)
    x_all, y_all = train.tensors[0].to(device), train.tensors[1].to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(y_all)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc=f"train {name} seed {cfg.seed}", disable=not progress, unit="epoch")
    for epoch in bar:
        model.train()
        order = torch.randperm(n, generator=g).to(device)
        epoch_loss = 0.0
        for i in range(steps_per_epoch):
            cancel.check()
            for group in opt.param_groups:
                group["lr"] = _lr_at(epoch + i / steps_per_epoch, cfg)
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            shift = torch.randint(-cfg.max_shift_px, cfg.max_shift_px + 1, (2,), generator=g).tolist()
            # objects sit on a flat background, so a wrap-around roll is a clean translation
            xb = torch.roll(x_all[idx], shifts=shift, dims=(-2, -1))
            if cfg.flip and float(torch.rand(1, generator=g)) < 0.5:
                xb = torch.flip(xb, dims=(-1,))
            loss = F.cross_entropy(model(xb), y_all[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_loss += float(loss.detach()) * len(idx)
        losses.append(epoch_loss / n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    wall = time.perf_counter() - started
    x_test, y_test = test.tensors[0].to(device), test.tensors[1].to(device)
    return TrainResult(model, top1(model, x_test, y_test), wall, losses)


def checkpoint_metadata(result: TrainResult, cfg: TrainConfig, class_names) -> dict[str, str]:
    """What a trained model file records: its accuracy, training config and class names. No wall
    time: the same config and seed give the same tensors."""
    return {"test_top1": f"{result.test_top1:.2f}", "train_config": json.dumps(dataclasses.asdict(cfg)),
            CLASS_NAMES_KEY: json.dumps(list(class_names))}
