"""The ViT/DeiT family: timm's ``VisionTransformer`` (and the distilled DeiT), quantized and hooked.

The wrappers hold the original timm module and call its submodules, adding the taps a module
hook cannot reach: q·kᵀ before softmax (an inline matmul in timm), the residual sums, the
tensors around the positional embedding. Which taps hold a quantizer is the site plan's
decision (``psaq.quant.sites``): a wrapper takes its taps from the plan it is given, so this
file imports no quantization code, and the synthesis stage, which only hooks, does not run any.
LayerNorm, GELU and softmax stay in float.
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import Attention, Block, VisionTransformer
from torch import nn

from psaq.errors import ConfigError
from psaq.families import Family, register
from psaq.families.common import BLOCK_OFFICIAL, BLOCK_TAPS, COMMON_ROLES, FOLD_PATHS


class QuantViTAttention(nn.Module):
    """timm ``Attention`` with taps at the qkv output and at q·kᵀ·scale (computed in the
    official order: the product, then the scale)."""

    TAPPED = ("attn.qkv", "attn.scores", "attn.probs")

    def __init__(self, inner: Attention, config, plan):
        super().__init__()
        self.inner = inner
        self.taps = plan.taps(self.TAPPED)

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


class QuantViTBlock(nn.Module):
    """timm ``Block`` with taps at both LayerNorm outputs and both residual sums."""

    TAPPED = BLOCK_TAPS

    def __init__(self, inner: Block, config, plan):
        super().__init__()
        self.inner = inner
        self.taps = plan.taps(self.TAPPED)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None, is_causal: bool = False) -> torch.Tensor:
        m, t = self.inner, self.taps
        h = m.attn(t("block.norm1", m.norm1(x)), attn_mask=attn_mask, is_causal=is_causal)
        x = t("block.residual1", x + m.drop_path1(m.ls1(h)))
        return t("block.residual2", x + m.drop_path2(m.ls2(m.mlp(t("block.norm2", m.norm2(x))))))


class QuantPosEmbed(nn.Module):
    """Takes the place of a ViT's ``pos_drop`` to quantize around the positional embedding.

    timm's ``_pos_embed`` prepends the prefix tokens and adds ``pos_embed`` in one method, with
    no module between the two. To put taps at the concatenation (``prefix_concat``), at the
    parameter (``pos_embed``) and at the sum (``pos_sum``), this module owns the parameter and
    leaves a zero buffer in its place: timm then adds zeros (exact) and hands the concatenated
    tokens here, where the real parameter is added."""

    TAPPED = ("prefix_concat", "pos_embed", "pos_sum")

    def __init__(self, model: VisionTransformer, plan):
        super().__init__()
        if getattr(model, "dynamic_img_size", False) or getattr(model, "no_embed_class", False):
            raise ConfigError("quantizing around the positional embedding needs a ViT that adds it after "
                              "prepending the class token at a fixed size (no dynamic_img_size, no no_embed_class)")
        self.inner = model.pos_drop
        self.taps = plan.taps(self.TAPPED)
        self.owns_embedding = "prefix_concat" in plan or "pos_embed" in plan
        if self.owns_embedding:
            self.pos_embed = model.pos_embed
            del model.pos_embed
            model.register_buffer("pos_embed", torch.zeros_like(self.pos_embed.detach()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.owns_embedding:
            x = self.taps("prefix_concat", x) + self.taps("pos_embed", self.pos_embed)
        return self.inner(self.taps("pos_sum", x))


def quantize_vit_sites(model: VisionTransformer, config, plan) -> VisionTransformer:
    """The sites around the positional embedding, where the site set has any."""
    if model.pos_embed is not None and any(site in plan for site in QuantPosEmbed.TAPPED):
        model.pos_drop = QuantPosEmbed(model, plan)
    return model


HEAD = (("head_input",), ("logits",))

VIT = register(Family(
    name="vit",
    model_types=(VisionTransformer,),
    attention_types=(Attention,),
    block_types=(Block,),
    wrappers={Attention: QuantViTAttention, Block: QuantViTBlock, VisionTransformer: quantize_vit_sites,
              VisionTransformerDistilled: quantize_vit_sites},
    roles={
        **COMMON_ROLES,
        (VisionTransformer, "patch_embed"): ((), ("patch_embed",)),
        (VisionTransformerDistilled, "patch_embed"): ((), ("patch_embed",)),
        (Attention, "proj"): (("attn.context",), ("attn.proj",)),
        (VisionTransformer, "head"): HEAD,
        (VisionTransformerDistilled, "head"): HEAD,
        (VisionTransformerDistilled, "head_dist"): HEAD,
    },
    # PSAQ-ViT's ``vit_quant.py``: 10 per block and 7 outside them
    official_sites=("input", "patch_embed", "prefix_concat", "pos_embed", "pos_sum", *BLOCK_OFFICIAL,
                    "head_input", "logits"),
    compact_sites=("input", "linear.input", "attn.qkv", "attn.scores", "block.residual1", "block.residual2",
                   "pos_sum"),
    synthesis_lr=0.20,
    site_names={
        "prefix_concat": "the tokens after the class/distillation/register tokens are prepended",
        "pos_embed": "the positional-embedding parameter",
        "pos_sum": "the tokens after the positional embedding is added",
    },
    fold_paths=FOLD_PATHS,
))
