"""Image priors and the augmentation used while synthesizing."""

from __future__ import annotations

import math

import torch

# The paper's TV target, v ~ U(2500, 3000), was set for 32 images of 3×224×224.
REFERENCE_TV_NUMEL = 32 * 3 * 224 * 224
REFERENCE_SIZE = 224  # jitter offsets (±15 px, ±30 px) are given at this image size


# Each difference is (first slice − second slice) of the image's last two axes.
_NEIGHBOURS = (
    ((..., slice(None), slice(None, -1)), (..., slice(None), slice(1, None))),  # horizontal
    ((..., slice(None, -1), slice(None)), (..., slice(1, None), slice(None))),  # vertical
    ((..., slice(1, None), slice(None, -1)), (..., slice(None, -1), slice(1, None))),  # anti-diagonal
    ((..., slice(None, -1), slice(None, -1)), (..., slice(1, None), slice(1, None))),  # diagonal
)
_TV_CHUNK_ELEMENTS = 1 << 18  # images handled at once: their differences stay in cache
# Differences of a batch at most this many elements (all four together) are kept from forward
# for backward: a 32-px batch (0.4 M) is then a handful of operations each way; a 224-px batch
# (19 M) is recomputed a few images at a time instead.
_TV_KEEP_ELEMENTS = 1 << 22


def _image_chunks(x: torch.Tensor):
    step = max(1, _TV_CHUNK_ELEMENTS // max(1, x[0].numel()))
    return [(a, min(len(x), a + step)) for a in range(0, len(x), step)]


def _differences(x: torch.Tensor) -> list[torch.Tensor]:
    return [x[first] - x[second] for first, second in _NEIGHBOURS]


class _TotalVariation(torch.autograd.Function):
    """The four norms and their gradient Σ ±d/‖d‖ written into one buffer: autograd through the
    slices kept four differences and allocated eight image-sized zero tensors per step (a
    quarter of the estimator's own time at 224 px, measured). Small batches keep their
    differences for backward; large ones are recomputed a few images at a time, in cache."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        if 4 * x.numel() <= _TV_KEEP_ELEMENTS:
            kept = _differences(x)
            norms = torch.stack([torch.linalg.vector_norm(d) for d in kept])
        else:
            kept = None
            squares = x.new_zeros(len(_NEIGHBOURS))
            for a, b in _image_chunks(x):
                for k, d in enumerate(_differences(x[a:b])):
                    squares[k] += torch.linalg.vector_norm(d).square()
            norms = squares.sqrt()
        ctx.save_for_backward(x, norms)
        ctx.kept = kept
        return norms

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, norms = ctx.saved_tensors
        # a zero difference has no direction; autograd's norm gives it a zero gradient, and so do we
        scale = torch.where(norms > 0, grad / norms, torch.zeros_like(norms))
        out = torch.zeros_like(x)
        parts = [(out, ctx.kept)] if ctx.kept is not None else ((out[a:b], _differences(x[a:b])) for a, b in _image_chunks(x))
        for target, differences in parts:
            for k, ((first, second), d) in enumerate(zip(_NEIGHBOURS, differences)):
                target[first].addcmul_(d, scale[k])
                target[second].addcmul_(d, scale[k], value=-1)
        return out


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Sum of the L2 norms of the horizontal, vertical and two diagonal neighbour differences."""
    norms = _TotalVariation.apply(x)
    return norms[0] + norms[1] + norms[2] + norms[3]


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
