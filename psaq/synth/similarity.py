"""Patch similarity: cosine similarity of every pair of tokens after self-attention."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


_NORM_EPS = 1e-8  # a norm below this is taken as this: torch's cosine-similarity eps


def mean_over_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, heads·d) with heads concatenated → (B, N, d), averaged over heads."""
    B, N, C = x.shape
    return x.reshape(B, N, num_heads, C // num_heads).mean(dim=2)


def cosine_similarity_matrix(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, d) → (B, N, N). A matrix product of unit vectors: no (B, N, N, d) broadcast."""
    unit = F.normalize(tokens, dim=-1, eps=_NORM_EPS)
    return unit @ unit.transpose(-1, -2)


@functools.lru_cache(maxsize=32)
def triangle_indices(n: int, offset: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row, column and flattened position of each entry of an n×n matrix on and above diagonal
    ``offset``, row by row (cached: the same few sizes come back at every step)."""
    i, j = torch.triu_indices(n, n, offset=offset, device=device)
    return i, j, i * n + j


# Matrices of the batch handled at once: rows × N² similarities that stay in cache. The full
# (B, N, N) matrix of a DeiT block at 224 px is 59 MB, and on this machine a fresh allocation
# costs more in page faults (0.3 ms per MB, measured) than computing it. 4 MB: a 28-px Swin's
# blocks in one chunk (backward 1.26 -> 0.97 ms against 1 MB), DeiT-Tiny's within noise.
_CHUNK_ELEMENTS = 1 << 20


def unit_vectors(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, d) → (t / max(‖t‖, eps), max(‖t‖, eps)), as ``F.normalize`` computes it."""
    norms = torch.linalg.vector_norm(tokens, dim=-1, keepdim=True).clamp_min_(_NORM_EPS)
    return tokens / norms, norms


def triangle_of_products(unit: torch.Tensor, offset: int) -> torch.Tensor:
    """(B, N, d) → (B, T): u_i·u_j on and above diagonal ``offset``, row by row, a few matrices
    at a time."""
    batch, n, _ = unit.shape
    flat = triangle_indices(n, offset, unit.device)[2]
    out = unit.new_empty((batch, flat.numel()))
    rows = max(1, _CHUNK_ELEMENTS // (n * n))
    for a in range(0, batch, rows):
        u = unit[a:a + rows]
        gram = torch.bmm(u, u.transpose(-1, -2)).view(u.shape[0], n * n)
        torch.index_select(gram, 1, flat, out=out[a:a + rows])
    return out


def triangle_gradient(grad: torch.Tensor, unit: torch.Tensor, norms: torch.Tensor, offset: int) -> torch.Tensor:
    """The gradient with respect to the tokens of ``triangle_of_products(unit_vectors(tokens))``
    given ``grad`` (B, T), its gradient with respect to the triangle (see ``_TriangleOfCosines``)."""
    batch, n, _ = unit.shape
    flat = triangle_indices(n, offset, unit.device)[2]
    rows = max(1, _CHUNK_ELEMENTS // (n * n))
    out = torch.empty_like(unit)
    laid = unit.new_zeros((min(rows, batch), n * n))  # the entries below the triangle stay 0
    grad = grad.contiguous()
    unclamped = (norms > _NORM_EPS).to(unit.dtype)
    for a in range(0, batch, rows):
        b = min(batch, a + rows)
        g = laid[: b - a].index_copy_(1, flat, grad[a:b]).view(b - a, n, n)
        u, norm = unit[a:b], norms[a:b]
        gu = torch.bmm(g + g.transpose(-1, -2), u, out=out[a:b])
        along = torch.linalg.vecdot(gu, u, dim=-1).unsqueeze_(-1).mul_(unclamped[a:b])
        torch.addcmul(gu, u, along, value=-1, out=gu).div_(norm)
    return out


class _TriangleOfCosines(torch.autograd.Function):
    """(B, N, d) tokens → (B, T) cosine similarities u_i·u_j on and above a diagonal, row by row,
    a few matrices at a time, with u = t / max(‖t‖, eps) as ``F.normalize`` computes it.

    Backward: the gradient of u_i·u_j reaches both u_i and u_j, so it is (G + Gᵀ)·u with G the
    triangle's gradient laid back into its matrix (one product, not the two that autograd takes
    for u @ uᵀ); through the normalization it is (g − u⟨u, g⟩)/‖t‖, or g/eps where the norm was
    clamped. Done chunk by chunk here, instead of by autograd through the division, it makes
    no (B, N, d) temporaries: autograd's took 100 ms a step on DeiT-Tiny at 224 px (profiled)."""

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, offset: int) -> torch.Tensor:
        unit, norms = unit_vectors(tokens)
        ctx.save_for_backward(unit, norms)
        ctx.offset = offset
        return triangle_of_products(unit, offset)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        unit, norms = ctx.saved_tensors
        return triangle_gradient(grad, unit, norms, ctx.offset), None


def upper_triangle_similarities(tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """(B, N, d) → (B, T): the cosine similarities on and above diagonal ``offset`` of each
    image's N×N matrix, row by row, without materialising the matrices."""
    return _TriangleOfCosines.apply(tokens.contiguous(), offset)


def pairwise_similarities(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, d) → (B, N(N-1)/2): each unordered pair once, the trivial diagonal (always 1) left out."""
    return upper_triangle_similarities(tokens, offset=1)
