"""The BEiT family: timm's ``Beit`` (BEiT, BEiT v2), quantized and hooked.

BEiT differs from ViT where quantization sees it: the qkv projection has no bias of its own
(q and v biases are parameters added after it, k has none), each block's attention adds a learned
relative-position bias to the scores, and the residual branches are scaled by ``gamma``. The
attention wrapper taps the bias table and the scores after the bias, as on Swin; the paper's
site set for this family is ViT's per-block set plus those two, as the official code quantizes
Swin's bias. A bias shared by all blocks (``use_shared_rel_pos_bias``) is added in float.
"""

from __future__ import annotations

from typing import Optional

import torch
from timm.models.beit import Attention, Beit, Block
from torch import nn

from psaq.families import Family, register
from psaq.families.common import BLOCK_OFFICIAL, BLOCK_TAPS, COMMON_ROLES, FOLD_PATHS


class QuantBeitAttention(nn.Module):
    """timm BEiT ``Attention`` with taps at the qkv output (after its q/v biases), at (q·scale)·kᵀ,
    at the bias table and at the scores after adding the bias."""

    TAPPED = ("attn.qkv", "attn.scores", "attn.rel_pos_table", "attn.biased_scores", "attn.probs")

    def __init__(self, inner: Attention, config, plan):
        super().__init__()
        self.inner = inner
        self.taps = plan.taps(self.TAPPED)

    def _rel_pos_bias(self) -> torch.Tensor:
        m = self.inner
        area = m.window_size[0] * m.window_size[1] + 1
        table = self.taps("attn.rel_pos_table", m.relative_position_bias_table)
        return table[m.relative_position_index.view(-1)].view(area, area, -1).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, shared_rel_pos_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        m = self.inner
        B, N, _ = x.shape
        qkv = m.qkv(x)
        if m.q_bias is not None:
            qkv = qkv + torch.cat((m.q_bias, m.k_bias, m.v_bias))
        qkv = self.taps("attn.qkv", qkv)
        q, k, v = qkv.reshape(B, N, 3, m.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.taps("attn.scores", (q * m.scale) @ k.transpose(-2, -1))
        if m.relative_position_bias_table is not None:
            attn = attn + self._rel_pos_bias()
        if shared_rel_pos_bias is not None:
            attn = attn + shared_rel_pos_bias
        attn = m.attn_drop(self.taps("attn.probs", self.taps("attn.biased_scores", attn).softmax(dim=-1)))
        x = (attn @ v).transpose(1, 2).reshape(B, N, -1)
        return m.proj_drop(m.proj(x))


class QuantBeitBlock(nn.Module):
    """timm BEiT ``Block`` with taps at both LayerNorm outputs and both residual sums."""

    TAPPED = BLOCK_TAPS

    def __init__(self, inner: Block, config, plan):
        super().__init__()
        self.inner = inner
        self.taps = plan.taps(self.TAPPED)

    def forward(self, x: torch.Tensor, shared_rel_pos_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        m, t = self.inner, self.taps
        h = m.attn(t("block.norm1", m.norm1(x)), shared_rel_pos_bias=shared_rel_pos_bias)
        x = t("block.residual1", x + m.drop_path1(h if m.gamma_1 is None else m.gamma_1 * h))
        h = m.mlp(t("block.norm2", m.norm2(x)))
        return t("block.residual2", x + m.drop_path2(h if m.gamma_2 is None else m.gamma_2 * h))


BEIT = register(Family(
    name="beit",
    model_types=(Beit,),
    attention_types=(Attention,),
    block_types=(Block,),
    wrappers={Attention: QuantBeitAttention, Block: QuantBeitBlock},
    roles={
        **COMMON_ROLES,
        (Beit, "patch_embed"): ((), ("patch_embed",)),
        (Attention, "proj"): (("attn.context",), ("attn.proj",)),
        (Beit, "head"): (("head_input",), ("logits",)),
    },
    official_sites=("input", "patch_embed", *BLOCK_OFFICIAL, "attn.rel_pos_table", "attn.biased_scores",
                    "head_input", "logits"),
    compact_sites=("input", "linear.input", "attn.qkv", "attn.scores", "block.residual1", "block.residual2"),
    synthesis_lr=0.20,  # ViT's: BEiT is a plain (non-hierarchical) transformer like it
    site_names={
        "attn.rel_pos_table": "the relative-position-bias table",
        "attn.biased_scores": "the scores after adding the relative-position bias",
    },
    fold_paths=FOLD_PATHS,
))
