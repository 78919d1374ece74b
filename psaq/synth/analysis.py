"""Read-only measurements of image sets through a model: patch similarities and their entropy."""

from __future__ import annotations

import torch
from torch import nn

from psaq.synth.entropy import block_entropies
from psaq.synth.hooks import AttentionOutputHooks
from psaq.synth.similarity import mean_over_heads, pairwise_similarities


@torch.no_grad()
def patch_similarities(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Per block, every pairwise patch cosine similarity over the batch (flattened, on the CPU)."""
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    with AttentionOutputHooks(model) as hooks:
        model(images)
        captured = hooks.take()
    return [pairwise_similarities(mean_over_heads(c.output, c.num_heads)[:, prefix:]).flatten().cpu() for c in captured]


@torch.no_grad()
def entropy_per_block(model: nn.Module, images: torch.Tensor, estimator: str = "official") -> list[float]:
    with AttentionOutputHooks(model) as hooks:
        model(images)
        captured = hooks.take()
    return block_entropies(captured, images.shape[0], int(getattr(model, "num_prefix_tokens", 0)), estimator).tolist()
