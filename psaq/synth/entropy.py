"""Patch-similarity entropy per block, by name of the estimator, batched over blocks of equal shape.

``official`` is the estimator of PSAQ-ViT's code (``generate_data.py``): per block, the
head-averaged attention output without its first token; the full N×N cosine-similarity
matrix of each image (diagonal and both orders kept, computed as the upper triangle with the
off-diagonal counted twice; on Swin, the windows of one image pooled into one set); one
Gaussian KDE per image evaluated on a grid between the min and the max over the whole batch;
the entropy averaged over the images.

``unique-pairs`` is psaq's own variant: each unordered token pair once without the diagonal,
every prefix (class/distillation/register) token dropped and no other, one KDE and one grid per
image (per window on Swin), averaged over images and windows.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from psaq.registry import Registry
from psaq.synth.hooks import Captured
from psaq.synth.kde import BANDWIDTH, DENSITY_EPS, GRID_POINTS, entropy_of_rows, fused_kde_entropy, grid_points
from psaq.synth.similarity import (mean_over_heads, pairwise_similarities, triangle_gradient, triangle_indices,
                                  triangle_of_products, unit_vectors, upper_triangle_similarities)


@dataclass(frozen=True)
class KdeSettings:
    bandwidth: float = BANDWIDTH
    num_points: int = GRID_POINTS
    eps: float = DENSITY_EPS
    kde: Callable[..., torch.Tensor] = fused_kde_entropy  # or a compiled kde_entropy


# (attention outputs of K blocks of one shape, (rows, N, heads·d) each; heads; leading tokens
# dropped; images; settings) → (K,) mean entropy per block
Estimator = Callable[[list[torch.Tensor], int, int, int, KdeSettings], torch.Tensor]
ENTROPY_ESTIMATORS: Registry[Estimator] = Registry("entropy estimator")
# leading tokens each estimator drops, given the model's prefix-token count
DROPPED_TOKENS: dict[str, Callable[[int], int]] = {}


def _register(name: str, dropped: Callable[[int], int]):
    def add(fn: Estimator) -> Estimator:
        DROPPED_TOKENS[name] = dropped
        return ENTROPY_ESTIMATORS.register(name)(fn)

    return add


def _float_type(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def stacked_tokens(outputs: list[torch.Tensor], heads: int, drop: int) -> torch.Tensor:
    """(K·rows, N − drop, d): each block's output averaged over heads, without its first ``drop``
    tokens, blocks one after another (differentiable)."""
    return torch.cat([mean_over_heads(o.to(_float_type(o)), heads)[:, drop:, :] for o in outputs], dim=0)


@functools.lru_cache(maxsize=32)
def _pair_weights(n: int, windows: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1 for the diagonal, 2 for each value above it (it stands for both orders), per window."""
    i, j, _ = triangle_indices(n, 0, device)
    return torch.where(i == j, 1.0, 2.0).to(dtype).repeat(windows)


def _block_ends(triangle: torch.Tensor, blocks: int, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(blocks·images, 1) twice: the ends of each image's grid, the min and the max over its
    block's whole batch."""
    per_block = triangle.detach().reshape(blocks, -1)
    lo, hi = per_block.amin(dim=1), per_block.amax(dim=1)  # aminmax(dim=1) took 8x as long here
    return lo.repeat_interleave(images).unsqueeze(1), hi.repeat_interleave(images).unsqueeze(1)


class _OfficialEntropy(torch.autograd.Function):
    """The official estimator from the blocks' attention outputs to their mean entropies, with one
    backward for all of it: the mean over heads, the dropped token, the similarity triangle and
    the KDE (whose gradient ``entropy_of_rows`` computes in the forward pass). The same formulas
    as the composed path (``_official_composed``); a few dozen tensor operations a step fewer,
    which is most of the estimator's cost on a 32-px model."""

    @staticmethod
    def forward(ctx, heads: int, drop: int, images: int, kde: KdeSettings, *outputs: torch.Tensor) -> torch.Tensor:
        blocks = len(outputs)
        rows, n, channels = outputs[0].shape
        tokens = outputs[0].new_empty((blocks * rows, n - drop, channels // heads), dtype=_float_type(outputs[0]))
        for k, o in enumerate(outputs):
            split = o.to(tokens.dtype).reshape(rows, n, heads, channels // heads)[:, drop:]
            torch.mean(split, dim=2, out=tokens[k * rows:(k + 1) * rows])
        unit, norms = unit_vectors(tokens)
        triangle = triangle_of_products(unit, 0)  # (K·rows, T)
        points = grid_points(triangle, kde.num_points, *_block_ends(triangle, blocks, images))
        weights = _pair_weights(n - drop, rows // images, triangle.dtype, triangle.device)
        want_grad = any(ctx.needs_input_grad[4:])
        entropy, grad = entropy_of_rows(triangle.view(blocks * images, -1), points, weights,
                                        kde.bandwidth, kde.eps, want_grad)
        ctx.save_for_backward(grad, unit, norms)
        ctx.shape = (blocks, images, heads, drop, outputs[0].shape, [o.dtype for o in outputs])
        return entropy.view(blocks, images).mean(dim=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        grad, unit, norms = ctx.saved_tensors
        blocks, images, heads, drop, (rows, n, channels), dtypes = ctx.shape
        # The incoming gradient of each row (through the means over images and over heads) scales
        # the tokens' gradient, which is linear in it: applied there, in place, it needs no new
        # (rows, T) tensor (its page faults cost 30-50 ms a step on DeiT-Tiny's blocks).
        per_row = (grad_out / images).repeat_interleave(rows) / heads
        grad_tokens = triangle_gradient(grad.view(blocks * rows, -1), unit, norms, 0).mul_(per_row[:, None, None])
        # all blocks at once, zero at the dropped tokens: zeroed whole and then filled, because a
        # fresh tensor's first writes scattered over its rows cost a cache miss each (0.34 ms for
        # zeroing only the dropped tokens of a 28-px ViT's blocks, against 0.05 for all of it)
        whole = grad_tokens.new_zeros((blocks * rows, n, heads, channels // heads))
        whole[:, drop:] = grad_tokens[:, :, None, :]
        grads = [whole[k * rows:(k + 1) * rows].view(rows, n, channels).to(dtype) for k, dtype in enumerate(dtypes)]
        return (None, None, None, None, *grads)


def _official_composed(outputs: list[torch.Tensor], heads: int, drop: int, images: int, kde: KdeSettings) -> torch.Tensor:
    """The official estimator by autograd through its parts, with ``kde.kde`` as the KDE (what
    torch.compile wraps)."""
    blocks = len(outputs)
    tokens = stacked_tokens(outputs, heads, drop)
    # The similarity matrix is symmetric: its upper triangle with the diagonal, each off-diagonal
    # value counted twice, is the official N² samples at half the kernel evaluations (and its
    # min and max are the matrix's).
    triangle = upper_triangle_similarities(tokens)  # (K·rows, T)
    lo, hi = _block_ends(triangle, blocks, images)
    weights = _pair_weights(tokens.shape[1], tokens.shape[0] // (blocks * images), triangle.dtype, triangle.device)
    # rows are image-major (Swin partitions windows per image), so a view pools an image's windows
    samples = triangle.reshape(blocks * images, -1)
    return kde.kde(samples, kde.bandwidth, kde.num_points, kde.eps, lo, hi, weights).view(blocks, images).mean(dim=1)


# The official code drops token 0 of every row and no other (`[:, 1:, :]`): the class token on
# DeiT, the first token of each window on Swin. On a model with more prefix tokens (a
# distillation token, registers) the others stay in, as they would in the official code.
@_register("official", lambda prefix: 1)
def official(outputs: list[torch.Tensor], heads: int, drop: int, images: int, kde: KdeSettings) -> torch.Tensor:
    if kde.kde is fused_kde_entropy:  # eager: one autograd node for the whole estimator
        return _OfficialEntropy.apply(heads, drop, images, kde, *outputs)
    return _official_composed(outputs, heads, drop, images, kde)


@_register("unique-pairs", lambda prefix: prefix)
def unique_pairs(outputs: list[torch.Tensor], heads: int, drop: int, images: int, kde: KdeSettings) -> torch.Tensor:
    tokens = stacked_tokens(outputs, heads, drop)
    ent = kde.kde(pairwise_similarities(tokens), kde.bandwidth, kde.num_points, kde.eps)
    return ent.view(len(outputs), -1).mean(dim=1)


def block_entropies(
    captured: list[Captured],
    images: int,
    prefix_tokens: int,
    estimator: str = "official",
    kde: KdeSettings = KdeSettings(),
) -> torch.Tensor:
    """Mean patch-similarity entropy of each captured block → (num_blocks,).

    ``images`` is the batch size: a captured tensor holds ``images × windows`` rows.
    Computed in float32 whatever the captured dtype (a bf16 forward still gets a float32 KDE:
    the kernel width, 0.01, is below bf16's resolution near 1).
    """
    if not captured:
        raise ValueError("no attention outputs were captured; was the model run inside the hooks?")
    estimate = ENTROPY_ESTIMATORS.get(estimator)
    drop = DROPPED_TOKENS[estimator](prefix_tokens)
    groups: dict[tuple, list[int]] = defaultdict(list)  # blocks of one shape are estimated together
    for idx, c in enumerate(captured):
        if c.output.shape[0] % images:
            raise ValueError(f"{c.name}: {c.output.shape[0]} rows do not split into {images} images")
        if c.output.shape[1] - drop < 2:
            raise ValueError(f"{c.name}: fewer than 2 patch tokens, no similarity to measure")
        groups[(tuple(c.output.shape), c.num_heads, c.output.dtype)].append(idx)
    per_block: list[torch.Tensor | None] = [None] * len(captured)
    for (_, heads, _), indices in groups.items():
        values = estimate([captured[i].output for i in indices], heads, drop, images, kde)
        for k, value in zip(indices, values):
            per_block[k] = value
    return torch.stack(per_block)
