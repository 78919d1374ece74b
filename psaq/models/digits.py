"""The embedded default: a small timm ViT trained by psaq itself on scikit-learn's digits.

Patch 8 on 32×32 inputs gives 16 tokens. At 64 tokens most patches of a digit are flat
background, and real digits' patch similarities become less diverse than noise's, which
reverses the method's premise; 16 tokens keep it.
"""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer

DIGITS_VIT_ARGS = dict(img_size=32, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0, num_classes=10)


def digits_vit(**overrides) -> VisionTransformer:
    """timm's VisionTransformer in the DeiT layout (class token, learned positions), sized for digits."""
    return VisionTransformer(**{**DIGITS_VIT_ARGS, **overrides})
