"""Patch similarity: cosine similarity of every pair of tokens after self-attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_over_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, heads·d) with heads concatenated → (B, N, d), averaged over heads."""
    B, N, C = x.shape
    return x.reshape(B, N, num_heads, C // num_heads).mean(dim=2)


def cosine_similarity_matrix(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, d) → (B, N, N). A matrix product of unit vectors: no (B, N, N, d) broadcast."""
    unit = F.normalize(tokens, dim=-1, eps=1e-8)
    return unit @ unit.transpose(-1, -2)


def pairwise_similarities(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, d) → (B, N(N-1)/2): each unordered pair once, the trivial diagonal (always 1) left out."""
    sim = cosine_similarity_matrix(tokens)
    n = tokens.shape[1]
    i, j = torch.triu_indices(n, n, offset=1, device=tokens.device)
    return sim[:, i, j]
