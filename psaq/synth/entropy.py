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

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

from psaq.registry import Registry
from psaq.synth.hooks import Captured
from psaq.synth.kde import BANDWIDTH, DENSITY_EPS, GRID_POINTS, kde_entropy
from psaq.synth.similarity import mean_over_heads, pairwise_similarities, triangle_indices, upper_triangle_similarities


@dataclass(frozen=True)
class KdeSettings:
    bandwidth: float = BANDWIDTH
    num_points: int = GRID_POINTS
    eps: float = DENSITY_EPS
    kde: Callable[..., torch.Tensor] = kde_entropy  # or a compiled kde_entropy


# (tokens of K blocks stacked: (K·rows, N, d), K, images, settings) → (K,) mean entropy per block
Estimator = Callable[[torch.Tensor, int, int, KdeSettings], torch.Tensor]
ENTROPY_ESTIMATORS: Registry[Estimator] = Registry("entropy estimator")
# leading tokens each estimator drops, given the model's prefix-token count
DROPPED_TOKENS: dict[str, Callable[[int], int]] = {}


def _register(name: str, dropped: Callable[[int], int]):
    def add(fn: Estimator) -> Estimator:
        DROPPED_TOKENS[name] = dropped
        return ENTROPY_ESTIMATORS.register(name)(fn)

    return add


# The official code drops token 0 of every row and no other (`[:, 1:, :]`): the class token on
# DeiT, the first token of each window on Swin. On a model with more prefix tokens (a
# distillation token, registers) the others stay in, as they would in the official code.
@_register("official", lambda prefix: 1)
def official(tokens: torch.Tensor, blocks: int, images: int, kde: KdeSettings) -> torch.Tensor:
    # The similarity matrix is symmetric: its upper triangle with the diagonal, each off-diagonal
    # value counted twice, is the official N² samples at half the kernel evaluations (and its
    # min and max are the matrix's).
    triangle = upper_triangle_similarities(tokens)  # (K·rows, T)
    per_block = triangle.detach().reshape(blocks, -1)
    lo = per_block.amin(dim=1).repeat_interleave(images).unsqueeze(1)
    hi = per_block.amax(dim=1).repeat_interleave(images).unsqueeze(1)
    i, j, _ = triangle_indices(tokens.shape[1], 0, tokens.device)
    windows = tokens.shape[0] // (blocks * images)
    weights = torch.where(i == j, 1.0, 2.0).to(triangle.dtype).repeat(windows)
    # rows are image-major (Swin partitions windows per image), so a view pools an image's windows
    samples = triangle.reshape(blocks * images, -1)
    return kde.kde(samples, kde.bandwidth, kde.num_points, kde.eps, lo, hi, weights).view(blocks, images).mean(dim=1)


@_register("unique-pairs", lambda prefix: prefix)
def unique_pairs(tokens: torch.Tensor, blocks: int, images: int, kde: KdeSettings) -> torch.Tensor:
    ent = kde.kde(pairwise_similarities(tokens), kde.bandwidth, kde.num_points, kde.eps)
    return ent.view(blocks, -1).mean(dim=1)


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
    groups: dict[tuple, list[int]] = defaultdict(list)
    tokens = []
    for idx, c in enumerate(captured):
        if c.output.shape[0] % images:
            raise ValueError(f"{c.name}: {c.output.shape[0]} rows do not split into {images} images")
        dtype = c.output.dtype if c.output.dtype == torch.float64 else torch.float32
        t = mean_over_heads(c.output.to(dtype), c.num_heads)[:, drop:, :]
        if t.shape[1] < 2:
            raise ValueError(f"{c.name}: fewer than 2 patch tokens, no similarity to measure")
        tokens.append(t)
        groups[tuple(t.shape)].append(idx)
    per_block: list[torch.Tensor | None] = [None] * len(captured)
    for indices in groups.values():
        stacked = torch.cat([tokens[i] for i in indices], dim=0)  # (blocks·rows, N, d)
        for k, value in zip(indices, estimate(stacked, len(indices), images, kde)):
            per_block[k] = value
    return torch.stack(per_block)
