"""Per-channel scales of post-LayerNorm activations folded into the layers around them (RepQ-ViT).

A LayerNorm's output X (channel c) is calibrated per channel: scale s_c, zero point z_c. With a
per-tensor scale s̃ = mean(s) and zero point z̃ = round(mean(z)), r₁ = s / s̃ and r₂ = z − z̃:

    LayerNorm:  γ' = γ / r₁,   β' = (β + s·r₂) / r₁      so it outputs X̃ = (X + s·r₂) / r₁
    linear:     W' = W·diag(r₁),   b' = b − W·(s·r₂)     so W'X̃ + b' = WX + b

and quantizing X̃ per tensor with (s̃, z̃) gives exactly the integers of X quantized per channel
with (s, z): round(X̃/s̃ + z̃) = round(X/s + z). Inference is per tensor, as integer kernels want.
The weights' scales are taken again from W'.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from psaq.families import family_of
from psaq.quant.quantizers import ActQuantizer


def _folded(model: nn.Module) -> Iterator[tuple[ActQuantizer, nn.LayerNorm, list[nn.Module]]]:
    """Each folded-channel quantizer at a block's LayerNorm output, with that LayerNorm and the
    linear layers reading it (where they sit in a block is the family's ``fold_paths``)."""
    family = family_of(model)
    for block in model.modules():
        if not isinstance(block, family.quantized_block_types):
            continue
        for site, (norm_path, linear_paths) in family.fold_paths.items():
            key = site.replace(".", "_")
            q = block.taps.quantizers[key] if key in block.taps.quantizers else None
            if q is not None and q.folded:
                yield q, block.get_submodule(norm_path), [block.get_submodule(p) for p in linear_paths]


def give_fold_targets_a_bias(model: nn.Module) -> int:
    """Folding moves −W·(s·r₂) into the bias of each linear layer reading a folded LayerNorm. A
    layer without a bias (a qkv whose biases are added apart, a ViT built with ``qkv_bias=False``)
    gets a zero one when it is wrapped, which changes no output, so that the shift is not dropped
    and a saved model loads into the same structure. Returns how many were given one."""
    count = 0
    for _, _, linears in _folded(model):
        for lin in linears:
            if lin.linear.bias is None:
                w = lin.linear.weight
                lin.linear.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device))
                count += 1
    return count


def folding_pending(model: nn.Module) -> bool:
    return any(isinstance(m, ActQuantizer) and m.folded and m.scale.numel() > 1 for m in model.modules())


@torch.no_grad()
def fold_norm_scales(model: nn.Module) -> int:
    """Fold every calibrated folded-channel quantizer; returns how many were folded."""
    count = 0
    for q, norm, linears in _folded(model):
        if q.scale.numel() > 1:  # calibrated per channel, not folded yet
            _fold(q, norm, linears)
            count += 1
    return count


def _fold(q: ActQuantizer, norm: nn.LayerNorm, linears) -> None:
    s, z = q.scale.double(), q.zero_point.double()
    s_tilde = s.mean()
    z_tilde = torch.round(z.mean()).clamp(q.qmin, q.qmax)
    r1 = s / s_tilde
    r2 = z - z_tilde
    gamma, beta = norm.weight.double(), norm.bias.double()
    norm.weight.copy_((gamma / r1).to(norm.weight.dtype))
    norm.bias.copy_(((beta + s * r2) / r1).to(norm.bias.dtype))
    for lin in linears:
        w = lin.linear.weight.double()
        lin.linear.bias.copy_((lin.linear.bias.double() - w @ (s * r2)).to(lin.linear.bias.dtype))
        lin.linear.weight.copy_((w * r1[None, :]).to(lin.linear.weight.dtype))
        lin.weight_quantizer.recompute(lin.linear.weight)
    q.set_qparams(s_tilde.reshape(1), z_tilde.reshape(1))
