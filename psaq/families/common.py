"""What the built-in families share: timm's patch embedding and MLP, and the block's taps."""

from __future__ import annotations

from timm.layers import Mlp, PatchEmbed

from psaq.families import Role

# The sites at a child's input and output by its role, for timm layers every family uses
COMMON_ROLES: dict[tuple[type, str], Role] = {
    (PatchEmbed, "proj"): (("input",), ("patch_embed.proj",)),
    (Mlp, "fc2"): (("mlp.act",), ("mlp.fc2",)),
}

# the paper's 10 sites per block, in every family
BLOCK_OFFICIAL = ("block.norm1", "attn.qkv", "attn.scores", "attn.context", "attn.proj", "block.residual1",
                  "block.norm2", "mlp.act", "mlp.fc2", "block.residual2")
BLOCK_TAPS = ("block.norm1", "block.residual1", "block.norm2", "block.residual2")

# Both block wrappers hold the timm block as ``inner`` and its attention wrapped (``attn.inner``)
FOLD_PATHS = {
    "block.norm1": ("inner.norm1", ("inner.attn.inner.qkv",)),
    "block.norm2": ("inner.norm2", ("inner.mlp.fc1",)),
}
