"""Quantized wrappers of timm's attention and block modules.

Each wrapper holds the original timm module and calls its submodules, adding the
quantizer sites that a module hook cannot reach: q·kᵀ before softmax (an inline matmul
in timm) and the residual sums. The attention output is the input of ``proj``, which its
QuantLinear quantizes. LayerNorm, GELU and softmax stay in float (DESIGN §1).
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

from psaq.quant.config import QuantConfig
from psaq.quant.layers import QuantOutput, act_quantizer


class QuantViTAttention(nn.Module):
    """timm ``Attention`` with quantized q/k/v (the qkv output) and q·kᵀ."""

    def __init__(self, inner: Attention, config: QuantConfig):
        super().__init__()
        self.inner = inner
        self.qkv_quantizer = act_quantizer(config)
        self.qk_quantizer = act_quantizer(config)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False) -> torch.Tensor:
        m = self.inner
        B, N, _ = x.shape
        gate = m.gate(x).sigmoid() if getattr(m, "gate", None) is not None else None
        qkv = self.qkv_quantizer(m.qkv(x))
        q, k, v = qkv.reshape(B, N, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = m.q_norm(q), m.k_norm(k)
        attn = self.qk_quantizer((q * m.scale) @ k.transpose(-2, -1))
        attn = maybe_add_mask(attn, resolve_self_attn_mask(N, attn, attn_mask, is_causal))
        attn = m.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(B, N, m.attn_dim)
        x = m.norm(x)
        if gate is not None:
            x = x * gate
        return m.proj_drop(m.proj(x))


class QuantWindowAttention(nn.Module):
    """Swin ``WindowAttention``: q·kᵀ is quantized before the relative-position bias and the
    shifted-window mask are added, because the mask's -100 entries would otherwise set the range."""

    def __init__(self, inner: WindowAttention, config: QuantConfig):
        super().__init__()
        self.inner = inner
        self.qkv_quantizer = act_quantizer(config)
        self.qk_quantizer = act_quantizer(config)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        m = self.inner
        B_, N, _ = x.shape
        qkv = self.qkv_quantizer(m.qkv(x))
        q, k, v = qkv.reshape(B_, N, 3, m.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.qk_quantizer((q * m.scale) @ k.transpose(-2, -1))
        attn = attn + m._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, m.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, m.num_heads, N, N)
        attn = m.attn_drop(m.softmax(attn))
        x = (attn @ v).transpose(1, 2).reshape(B_, N, -1)
        return m.proj_drop(m.proj(x))


class QuantViTBlock(nn.Module):
    """timm ``Block`` with both residual sums quantized."""

    def __init__(self, inner: Block, config: QuantConfig):
        super().__init__()
        self.inner = inner
        self.residual1_quantizer = act_quantizer(config)
        self.residual2_quantizer = act_quantizer(config)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False) -> torch.Tensor:
        m = self.inner
        x = self.residual1_quantizer(x + m.drop_path1(m.ls1(m.attn(m.norm1(x), attn_mask=attn_mask, is_causal=is_causal))))
        return self.residual2_quantizer(x + m.drop_path2(m.ls2(m.mlp(m.norm2(x)))))


class QuantSwinBlock(nn.Module):
    """timm ``SwinTransformerBlock`` with both residual sums quantized; window logic stays timm's ``_attn``."""

    def __init__(self, inner: SwinTransformerBlock, config: QuantConfig):
        super().__init__()
        self.inner = inner
        self.residual1_quantizer = act_quantizer(config)
        self.residual2_quantizer = act_quantizer(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.inner
        B, H, W, C = x.shape
        x = self.residual1_quantizer(x + m.drop_path1(m._attn(m.norm1(x))))
        x = x.reshape(B, -1, C)
        x = self.residual2_quantizer(x + m.drop_path2(m.mlp(m.norm2(x))))
        return x.reshape(B, H, W, C)


def quantize_vit_sites(model: VisionTransformer, config: QuantConfig) -> VisionTransformer:
    """The positional-embedding sum: timm applies ``pos_drop`` right after it."""
    if model.pos_embed is not None:
        model.pos_drop = QuantOutput(model.pos_drop, config)
    return model
