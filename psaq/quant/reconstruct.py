"""Block reconstruction on the calibration images: each transformer block of the quantized model is
tuned so its output matches the float block's, one block after another.

- Weight rounding is learned (AdaRound): W_q = s·clamp(⌊W/s⌋ + h(V)), h(V) = clamp(σ(V)(ζ−γ)+γ, 0, 1),
  with the regularizer Σ 1 − |2h − 1|^β (β annealed from 20 to 2) driving h to 0 or 1; at the end
  each weight is rounded down or up by h ≥ ½, so weights stay on the integer grid.
- Activation step sizes are learned (LSQ: straight-through rounding, gradient to the scale).
- Activation quantization inside the block is dropped at random (QDrop), elementwise with
  probability ``drop_prob``, which flattens the loss landscape the rounding is learned on.
- A block's input is the quantized model's own (the blocks before it already reconstructed);
  its target is the float block's output on the float model's input.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from psaq import cancel
from psaq.errors import ConfigError, check_seed
from psaq.families import family_of
from psaq.quant.layers import QuantConv2d, QuantLinear
from psaq.quant.quantizers import ActQuantizer, learning

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (AdaRound)


@dataclass(frozen=True)
class ReconstructConfig:
    """``enabled: false`` (the default) leaves the calibrated model as it is (the paper's method)."""

    enabled: bool = False
    iters: int = 500  # per block
    lr_rounding: float = 1e-2
    lr_scale: float = 4e-5
    round_weight: float = 0.01  # λ of the rounding regularizer
    beta: tuple[float, float] = (20.0, 2.0)
    warmup: float = 0.2  # fraction of a block's iterations before the regularizer starts
    drop_prob: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"reconstruct.enabled must be true or false, got {self.enabled!r}")
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 1:
            raise ConfigError(f"reconstruct.iters must be a positive integer, got {self.iters!r}")
        for name in ("lr_rounding", "lr_scale"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"reconstruct.{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.drop_prob < 1 or not 0 <= self.warmup < 1 or self.round_weight < 0:
            raise ConfigError("reconstruct: drop_prob and warmup must be in [0, 1), round_weight >= 0")
        object.__setattr__(self, "beta", tuple(self.beta))
        if len(self.beta) != 2 or not self.beta[0] >= self.beta[1] > 0:
            raise ConfigError(f"reconstruct.beta must be (start, end) with start >= end > 0, got {list(self.beta)}")
        check_seed("reconstruct.seed", self.seed)


def _blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    types = family_of(model).quantized_block_types
    return [(n, m) for n, m in model.named_modules() if isinstance(m, types)]


def _float_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    types = family_of(model).block_types
    return [(n, m) for n, m in model.named_modules() if type(m) in types]


@torch.no_grad()
def _io(model: nn.Module, block: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and output ``block`` sees when ``model`` runs on ``images``."""
    seen = {}

    def hook(_m, args, out):
        seen["in"], seen["out"] = args[0].detach(), out.detach()

    handle = block.register_forward_hook(hook)
    try:
        model(images)
    finally:
        handle.remove()
    return seen["in"], seen["out"]


class _AdaRound:
    """A linear layer's learned rounding: the parameter V and the soft-quantized weight it gives."""

    def __init__(self, layer: QuantLinear | QuantConv2d):
        self.layer = layer
        wq = layer.weight_quantizer
        w = layer.weight.detach()
        scale = wq.scale.to(w.dtype)
        self.floor = torch.floor(w / scale)
        rest = (w / scale - self.floor).clamp(0.01, 0.99)
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(V) = rest
        self.scale, self.qmin, self.qmax = scale, wq.qmin, wq.qmax

    def h(self) -> torch.Tensor:
        return (torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)

    def soft(self, _weight: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.floor + self.h(), self.qmin, self.qmax) * self.scale

    def regularizer(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    @torch.no_grad()
    def harden(self) -> None:
        """Weights onto the grid by the learned rounding; the scale stays the one it was learned with."""
        q = torch.clamp(self.floor + (self.h() >= 0.5).to(self.floor.dtype), self.qmin, self.qmax)
        self.layer.weight.copy_((q * self.scale).to(self.layer.weight.dtype))


def reconstruct(qmodel: nn.Module, float_model: nn.Module, images: torch.Tensor, cfg: ReconstructConfig,
                device: str | torch.device = "cpu", progress: bool = True) -> dict[str, list[float]]:
    """Tune every transformer block of a calibrated ``qmodel`` in turn; returns the loss of each
    block every 10 iterations."""
    device = torch.device(device)
    qmodel.eval().to(device)
    float_model.eval().to(device)
    images = images.to(device)
    q_blocks, f_blocks = _blocks(qmodel), _float_blocks(float_model)
    if len(q_blocks) != len(f_blocks):
        raise ConfigError(f"reconstruction found {len(q_blocks)} quantized blocks but {len(f_blocks)} float ones")
    torch.manual_seed(cfg.seed)  # QDrop's masks
    history: dict[str, list[float]] = {}
    params_state = [(p, p.requires_grad) for p in qmodel.parameters()]
    for p, _ in params_state:
        p.requires_grad_(False)
    started = time.perf_counter()
    bar = tqdm(total=len(q_blocks) * cfg.iters, desc="reconstruct", disable=not progress, unit="it")
    try:
        for (name, qb), (_, fb) in zip(q_blocks, f_blocks):
            _, target = _io(float_model, fb, images)
            x_q, _ = _io(qmodel, qb, images)
            history[name] = _tune_block(qb, x_q, target, cfg, bar)
    finally:
        bar.close()
        for p, flag in params_state:
            p.requires_grad_(flag)
    history["wall_s"] = [time.perf_counter() - started]
    return history


def _tune_block(block: nn.Module, x: torch.Tensor, target: torch.Tensor, cfg: ReconstructConfig, bar) -> list[float]:
    rounders = [_AdaRound(m) for m in block.modules() if isinstance(m, (QuantLinear, QuantConv2d))]
    acts = [m for m in block.modules() if isinstance(m, ActQuantizer) and m.learnable_scale and bool(m.calibrated)]
    dropped = [m for m in block.modules() if isinstance(m, ActQuantizer)]  # those without a scale to learn too
    losses: list[float] = []
    with learning(dropped, scales=acts, drop_prob=cfg.drop_prob,
                  rounding={r.layer.weight_quantizer: r.soft for r in rounders}) as learned_scales:
        opt_round = torch.optim.Adam([r.v for r in rounders], lr=cfg.lr_rounding)
        opt_scale = torch.optim.Adam(learned_scales, lr=cfg.lr_scale) if acts else None
        warm = int(cfg.warmup * cfg.iters)
        block.train()
        try:
            for it in range(cfg.iters):
                cancel.check()
                out = block(x)
                rec = F.mse_loss(out, target)
                if it < warm:
                    beta, reg = cfg.beta[0], torch.zeros((), device=x.device)
                else:
                    t = (it - warm) / max(1, cfg.iters - warm)
                    beta = cfg.beta[1] + 0.5 * (cfg.beta[0] - cfg.beta[1]) * (1 + math.cos(math.pi * t))
                    reg = cfg.round_weight * sum(r.regularizer(beta) for r in rounders)
                loss = rec + reg
                opt_round.zero_grad(set_to_none=True)
                if opt_scale:
                    opt_scale.zero_grad(set_to_none=True)
                loss.backward()
                opt_round.step()
                if opt_scale:
                    opt_scale.step()
                if it % 10 == 0 or it == cfg.iters - 1:
                    if not torch.isfinite(loss):
                        raise ConfigError(f"reconstruction diverged (loss {loss.item()}); lower reconstruct.lr_scale")
                    losses.append(float(rec.detach()))
                bar.update(1)
        finally:
            block.eval()
            for r in rounders:
                r.harden()
    return losses
