"""Image priors and the augmentation used while synthesizing."""

from __future__ import annotations

import math

import torch

# The paper's TV target, v ~ U(2500, 3000), was set for 32 images of 3×224×224.
REFERENCE_TV_NUMEL = 32 * 3 * 224 * 224
REFERENCE_SIZE = 224  # jitter offsets (±15 px, ±30 px) are given at this image size


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Sum of the L2 norms of the horizontal, vertical and two diagonal neighbour differences."""
    diffs = (
        x[..., :, :-1] - x[..., :, 1:],
        x[..., :-1, :] - x[..., 1:, :],
        x[..., 1:, :-1] - x[..., :-1, 1:],
        x[..., :-1, :-1] - x[..., 1:, 1:],
    )
    return sum(torch.linalg.vector_norm(d) for d in diffs)


def tv_target_scale(shape: tuple[int, ...]) -> float:
    """An L2 norm of i.i.d.-like differences grows with the square root of the element count,
    so the reference target is scaled by sqrt(numel / numel_ref)."""
    return math.sqrt(math.prod(shape) / REFERENCE_TV_NUMEL)


def scaled_jitter(pixels_at_224: int, image_size: int) -> int:
    """Jitter offsets scale with the image side; at least 1 px so the augmentation never vanishes."""
    return max(1, round(pixels_at_224 * image_size / REFERENCE_SIZE))


def draw_jitter(max_shift: int, flip_prob: float, generator: torch.Generator) -> tuple[int, bool]:
    """One offset, uniform over the integers in [-max_shift, max_shift], and whether to flip."""
    shift = int(torch.randint(-max_shift, max_shift + 1, (1,), generator=generator))
    return shift, float(torch.rand(1, generator=generator)) < flip_prob


def apply_jitter(x: torch.Tensor, shift: int, flip: bool) -> torch.Tensor:
    """Roll the batch by the same offset in both axes, then flip it horizontally if ``flip``."""
    x = torch.roll(x, shifts=(shift, shift), dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def jitter_and_flip(x: torch.Tensor, max_shift: int, flip_prob: float, generator: torch.Generator) -> torch.Tensor:
    return apply_jitter(x, *draw_jitter(max_shift, flip_prob, generator))


def warmup_cosine_lr(step: int, total: int, warmup: int, base_lr: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) * base_lr
