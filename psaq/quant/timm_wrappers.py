"""Quantized wrappers of timm's attention, block and embedding modules.

Each wrapper holds the original timm module and calls its submodules, adding the taps that
a module hook cannot reach: q·kᵀ before softmax (an inline matmul in timm), Swin's
relative-position-bias table, the residual sums. Which taps hold a quantizer is the site
plan's decision (``psaq.quant.sites``). LayerNorm, GELU and softmax stay in float.
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask
from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

from psaq.errors import ConfigError
from psaq.quant.config import QuantConfig
from psaq.quant.layers import Taps


class QuantViTAttention(nn.Module):
    """timm ``Attention`` with taps at the qkv output and at q·kᵀ·scale (computed in the
    official order: the product, then the scale)."""

    SITES = ("attn.qkv", "attn.scores", "attn.probs")

    def __init__(self, inner: Attention, config: QuantConfig, plan):
        super().__init__()
        self.inner = inner
        self.taps = Taps(plan, self.SITES)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False) -> torch.Tensor:
        m = self.inner
        B, N, _ = x.shape
        gate = m.gate(x).sigmoid() if getattr(m, "gate", None) is not None else None
        qkv = self.taps("attn.qkv", m.qkv(x))
        q, k, v = qkv.reshape(B, N, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = m.q_norm(q), m.k_norm(k)
        attn = self.taps("attn.scores", (q @ k.transpose(-2, -1)) * m.scale)
        attn = maybe_add_mask(attn, resolve_self_attn_mask(N, attn, attn_mask, is_causal))
        attn = m.attn_drop(self.taps("attn.probs", attn.softmax(dim=-1)))
        x = (attn @ v).transpose(1, 2).reshape(B, N, m.attn_dim)
        x = m.norm(x)
        if gate is not None:
            x = x * gate
        return m.proj_drop(m.proj(x))


class QuantWindowAttention(nn.Module):
    """Swin ``WindowAttention``: taps at the qkv output, at (q·scale)·kᵀ, at the bias table and at
    the scores after adding the bias. The shifted-window mask is added after the last tap, so its
    −100 entries never set a range."""

    SITES = ("attn.qkv", "attn.scores", "attn.rel_pos_table", "attn.biased_scores", "attn.probs")

    def __init__(self, inner: WindowAttention, config: QuantConfig, plan):
        super().__init__()
        self.inner = inner
        self.taps = Taps(plan, self.SITES)

    def _rel_pos_bias(self) -> torch.Tensor:
        m = self.inner
        table = self.taps("attn.rel_pos_table", m.relative_position_bias_table)
        bias = table[m.relative_position_index.view(-1)].view(m.window_area, m.window_area, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        m = self.inner
        B_, N, _ = x.shape
        qkv = self.taps("attn.qkv", m.qkv(x))
        q, k, v = qkv.reshape(B_, N, 3, m.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.taps("attn.scores", (q * m.scale) @ k.transpose(-2, -1))
        attn = self.taps("attn.biased_scores", attn + self._rel_pos_bias())
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, m.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, m.num_heads, N, N)
        attn = m.attn_drop(self.taps("attn.probs", m.softmax(attn)))
        x = (attn @ v).transpose(1, 2).reshape(B_, N, -1)
        return m.proj_drop(m.proj(x))


class QuantViTBlock(nn.Module):
    """timm ``Block`` with taps at both LayerNorm outputs and both residual sums."""

    SITES = ("block.norm1", "block.residual1", "block.norm2", "block.residual2")

    def __init__(self, inner: Block, config: QuantConfig, plan):
        super().__init__()
        self.inner = inner
        self.taps = Taps(plan, self.SITES)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False) -> torch.Tensor:
        m, t = self.inner, self.taps
        h = m.attn(t("block.norm1", m.norm1(x)), attn_mask=attn_mask, is_causal=is_causal)
        x = t("block.residual1", x + m.drop_path1(m.ls1(h)))
        return t("block.residual2", x + m.drop_path2(m.ls2(m.mlp(t("block.norm2", m.norm2(x))))))


class QuantSwinBlock(nn.Module):
    """timm ``SwinTransformerBlock`` with the same taps; window logic stays timm's ``_attn``."""

    SITES = QuantViTBlock.SITES

    def __init__(self, inner: SwinTransformerBlock, config: QuantConfig, plan):
        super().__init__()
        self.inner = inner
        self.taps = Taps(plan, self.SITES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, t = self.inner, self.taps
        B, H, W, C = x.shape
        x = t("block.residual1", x + m.drop_path1(m._attn(t("block.norm1", m.norm1(x)))))
        x = x.reshape(B, -1, C)
        x = t("block.residual2", x + m.drop_path2(m.mlp(t("block.norm2", m.norm2(x)))))
        return x.reshape(B, H, W, C)


class QuantPosEmbed(nn.Module):
    """Takes the place of a ViT's ``pos_drop`` to quantize around the positional embedding.

    timm's ``_pos_embed`` prepends the prefix tokens and adds ``pos_embed`` in one method, with
    no module between the two. To put taps at the concatenation (``prefix_concat``), at the
    parameter (``pos_embed``) and at the sum (``pos_sum``), this module owns the parameter and
    leaves a zero buffer in its place: timm then adds zeros (exact) and hands the concatenated
    tokens here, where the real parameter is added."""

    SITES = ("prefix_concat", "pos_embed", "pos_sum")

    def __init__(self, model: VisionTransformer, plan):
        super().__init__()
        if getattr(model, "dynamic_img_size", False) or getattr(model, "no_embed_class", False):
            raise ConfigError("quantizing around the positional embedding needs a ViT that adds it after "
                              "prepending the class token at a fixed size (no dynamic_img_size, no no_embed_class)")
        self.inner = model.pos_drop
        self.taps = Taps(plan, self.SITES)
        self.owns_embedding = "prefix_concat" in plan or "pos_embed" in plan
        if self.owns_embedding:
            self.pos_embed = model.pos_embed
            del model.pos_embed
            model.register_buffer("pos_embed", torch.zeros_like(self.pos_embed.detach()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.owns_embedding:
            x = self.taps("prefix_concat", x) + self.taps("pos_embed", self.pos_embed)
        return self.inner(self.taps("pos_sum", x))


def quantize_vit_sites(model: VisionTransformer, config: QuantConfig, plan) -> VisionTransformer:
    """The sites around the positional embedding, where the site set has any."""
    if model.pos_embed is not None and any(site in plan for site in QuantPosEmbed.SITES):
        model.pos_drop = QuantPosEmbed(model, plan)
    return model
