"""The Swin family: timm's ``SwinTransformer``, quantized and hooked.

Swin's attention adds a learned relative-position bias to the scores and, in shifted blocks, a
mask of −100 between windows; the wrappers tap the bias table and the scores after the bias,
before the mask, so the mask never sets a range. Window partitioning stays timm's ``_attn``.
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.layers import ClassifierHead
from timm.models.swin_transformer import PatchMerging, SwinTransformer, SwinTransformerBlock, WindowAttention
from torch import nn

from psaq.families import Family, register
from psaq.families.common import BLOCK_OFFICIAL, BLOCK_TAPS, COMMON_ROLES, FOLD_PATHS
from psaq.site_names import MATMUL_INPUTS


class QuantWindowAttention(nn.Module):
    """Swin ``WindowAttention``: taps at the qkv output, at (q·scale)·kᵀ, at the bias table and at
    the scores after adding the bias. The shifted-window mask is added after the last tap, so its
    −100 entries never set a range."""

    TAPPED = ("attn.qkv", "attn.scores", "attn.rel_pos_table", "attn.biased_scores", "attn.probs")

    def __init__(self, inner: WindowAttention, config, plan):
        super().__init__()
        self.inner = inner
        self.taps = plan.taps(self.TAPPED)

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


class QuantSwinBlock(nn.Module):
    """timm ``SwinTransformerBlock`` with taps at both LayerNorm outputs and both residual sums."""

    TAPPED = BLOCK_TAPS

    def __init__(self, inner: SwinTransformerBlock, config, plan):
        super().__init__()
        self.inner = inner
        self.taps = plan.taps(self.TAPPED)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, t = self.inner, self.taps
        B, H, W, C = x.shape
        x = t("block.residual1", x + m.drop_path1(m._attn(t("block.norm1", m.norm1(x)))))
        x = x.reshape(B, -1, C)
        x = t("block.residual2", x + m.drop_path2(m.mlp(t("block.norm2", m.norm2(x)))))
        return x.reshape(B, H, W, C)


SWIN = register(Family(
    name="swin",
    model_types=(SwinTransformer,),
    attention_types=(WindowAttention,),
    block_types=(SwinTransformerBlock,),
    wrappers={WindowAttention: QuantWindowAttention, SwinTransformerBlock: QuantSwinBlock},
    roles={
        **COMMON_ROLES,
        (SwinTransformer, "patch_embed"): ((), ("patch_embed",)),
        (WindowAttention, "proj"): (("attn.context",), ("attn.proj",)),
        (PatchMerging, "reduction"): (("merge.norm",), ("merge.reduction",)),
        (SwinTransformer, "norm"): ((), ("final_norm",)),
        (ClassifierHead, "fc"): (("head_input",), ("logits",)),
    },
    # PSAQ-ViT's ``swin_quant.py``: 12 per block (with the bias table and the biased scores),
    # 2 per patch merging, 6 outside
    official_sites=("input", "patch_embed.proj", "patch_embed", *BLOCK_OFFICIAL, "attn.rel_pos_table",
                    "attn.biased_scores", "merge.norm", "merge.reduction", "final_norm", "head_input", "logits"),
    compact_sites=("input", "linear.input", "attn.qkv", "attn.scores", "block.residual1", "block.residual2"),
    synthesis_lr=0.25,
    site_names={
        "attn.rel_pos_table": "the relative-position-bias table",
        "attn.biased_scores": "the scores after adding the relative-position bias, before the shift mask",
        "merge.norm": "the patch-merging LayerNorm output (the reduction's input)",
        "merge.reduction": "the patch-merging output",
        "final_norm": "the final LayerNorm output",
    },
    matmul_inputs=(*MATMUL_INPUTS, "merge.norm"),
    fold_paths=FOLD_PATHS,
))
