"""Patch-similarity entropy per block, computed in one batched KDE for blocks of equal shape."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from psaq.synth.hooks import Captured
from psaq.synth.kde import BANDWIDTH, DENSITY_EPS, GRID_POINTS, kde_entropy
from psaq.synth.similarity import mean_over_heads, pairwise_similarities


def block_entropies(
    captured: list[Captured],
    prefix_tokens: int,
    bandwidth: float = BANDWIDTH,
    num_points: int = GRID_POINTS,
    eps: float = DENSITY_EPS,
    kde: Callable[..., torch.Tensor] = kde_entropy,
) -> torch.Tensor:
    """Mean patch-similarity entropy of each captured block → (num_blocks,).

    Computed in float32 whatever the captured dtype (a bf16 forward still gets a float32 KDE:
    the kernel width, 0.01, is below bf16's resolution near 1). ``kde`` may be a compiled
    ``kde_entropy``.

    ``prefix_tokens`` (class/register tokens) are dropped. Swin has none: its rows are
    windows, so similarities are taken between the tokens of one window, the tokens that
    attention mixes, and the entropy is averaged over images and windows.
    """
    if not captured:
        raise ValueError("no attention outputs were captured; was the model run inside the hooks?")
    groups: dict[tuple, list[int]] = defaultdict(list)
    tokens = []
    for idx, c in enumerate(captured):
        t = mean_over_heads(c.output.float(), c.num_heads)[:, prefix_tokens:, :]
        if t.shape[1] < 2:
            raise ValueError(f"{c.name}: fewer than 2 patch tokens, no similarity to measure")
        tokens.append(t)
        groups[tuple(t.shape)].append(idx)
    per_block: list[torch.Tensor | None] = [None] * len(captured)
    for indices in groups.values():
        stacked = torch.cat([tokens[i] for i in indices], dim=0)  # (blocks·rows, N, d)
        rows = tokens[indices[0]].shape[0]
        ent = kde(pairwise_similarities(stacked), bandwidth, num_points, eps)
        for k, block_mean in zip(indices, ent.view(len(indices), rows).mean(dim=1)):
            per_block[k] = block_mean
    return torch.stack(per_block)
