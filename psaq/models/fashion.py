"""psaq's Fashion-MNIST models: a DeiT-layout ViT and a Swin, trained by the pipeline itself.

Both see 28×28 gray images. ``fashion-vit``: patch 7, so 16 tokens (4×4) plus the class
token, width 96, depth 6, 3 heads; the premise of patch similarity holds at this token count
(at many more tokens, most patches are flat background). ``fashion-swin``: patch 2, so 14×14
tokens in 4 windows of 7×7 in its first stage, one window after patch merging.
"""

from __future__ import annotations

from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer


VIT_ARGS = dict(img_size=28, patch_size=7, in_chans=1, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0,
                num_classes=10)
SWIN_ARGS = dict(img_size=28, patch_size=2, in_chans=1, window_size=7, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                 mlp_ratio=4.0, num_classes=10)


def fashion_vit(**overrides) -> VisionTransformer:
    return VisionTransformer(**{**VIT_ARGS, **overrides})


def fashion_swin(**overrides) -> SwinTransformer:
    return SwinTransformer(**{**SWIN_ARGS, **overrides})


ARCHITECTURES = {"fashion-vit": fashion_vit, "fashion-swin": fashion_swin}
