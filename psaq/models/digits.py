"""The embedded default: a small timm ViT trained by psaq itself on scikit-learn's digits.

Patch 8 on 32×32 inputs gives 16 tokens. DESIGN §2: at 64 tokens most patches are flat
background and real digits' patch similarities become *less* diverse than noise's, which
reverses the method's premise; 16 tokens keep it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from tqdm.auto import tqdm

from psaq import cancel
from psaq.data import DIGITS_SPEC, digits_split
from psaq.errors import ConfigError

DIGITS_VIT_ARGS = dict(img_size=32, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0, num_classes=10)


def digits_vit(**overrides) -> VisionTransformer:
    """timm's VisionTransformer in the DeiT layout (class token, learned positions), sized for digits."""
    return VisionTransformer(**{**DIGITS_VIT_ARGS, **overrides})


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 60
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 3
    label_smoothing: float = 0.1
    max_shift_px: int = 2  # random translation, the only augmentation
    threads: int | None = None  # None keeps torch's default

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"train.seed must be a non-negative integer, got {self.seed!r}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr}")


@dataclass
class TrainResult:
    model: VisionTransformer
    test_top1: float
    wall_s: float
    losses: list[float]


def _lr_at(epoch_progress: float, cfg: TrainConfig) -> float:
    if epoch_progress < cfg.warmup_epochs:
        return cfg.lr * epoch_progress / cfg.warmup_epochs
    t = (epoch_progress - cfg.warmup_epochs) / max(1e-9, cfg.epochs - cfg.warmup_epochs)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t))) * cfg.lr


def train_digits_vit(cfg: TrainConfig = TrainConfig(), device: str | torch.device = "cpu", progress: bool = True,
                     model_args: dict | None = None) -> TrainResult:
    """Deterministic given ``cfg.seed`` on the CPU: seeded init, seeded shuffles and shifts.
    ``model_args`` overrides the architecture (tests train a shallower one in seconds)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    model = digits_vit(**(model_args or {})).to(device)
    train = digits_split("train")
    x_all, y_all = train.tensors[0].to(device), train.tensors[1].to(device)
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = len(y_all)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(range(cfg.epochs), desc=f"train digits-vit seed {cfg.seed}", disable=not progress, unit="epoch")
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
            # digits sit on a flat background, so a wrap-around roll is a clean translation
            xb = torch.roll(x_all[idx], shifts=shift, dims=(-2, -1))
            loss = F.cross_entropy(model(xb), y_all[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_loss += float(loss.detach()) * len(idx)
        losses.append(epoch_loss / n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    wall = time.perf_counter() - started
    return TrainResult(model, digits_test_top1(model, device), wall, losses)


@torch.no_grad()
def digits_test_top1(model: torch.nn.Module, device: str | torch.device = "cpu") -> float:
    test = digits_split("test")
    x, y = test.tensors[0].to(device), test.tensors[1].to(device)
    model.eval()
    pred = torch.cat([model(x[i : i + 256]).argmax(1) for i in range(0, len(y), 256)])
    return 100.0 * float((pred == y).float().mean())


def checkpoint_metadata(result: TrainResult, cfg: TrainConfig) -> dict[str, str]:
    """What a trained digits-vit file records: its accuracy, training config and class names."""
    import dataclasses
    import json

    from psaq.data import DIGITS_CLASSES
    from psaq.models.checkpoint import CLASS_NAMES_KEY

    # no wall time: the same config and seed give the same bytes, so the file's hash is its identity
    return {"test_top1": f"{result.test_top1:.2f}", "train_config": json.dumps(dataclasses.asdict(cfg)),
            CLASS_NAMES_KEY: json.dumps(list(DIGITS_CLASSES))}


def train_for_store(cfg: TrainConfig, model_args: dict | None = None, progress: bool = True):
    """The trainer the model stage calls: (result, checkpoint metadata)."""
    result = train_digits_vit(cfg, device="cpu", progress=progress, model_args=model_args)
    return result, checkpoint_metadata(result, cfg)
