"""The embedded default: a small timm ViT trained by psaq itself on scikit-learn's digits.

Patch 8 on 32×32 inputs gives 16 tokens. At 64 tokens most patches of a digit are flat
background, and real digits' patch similarities become less diverse than noise's, which
reverses the method's premise; 16 tokens keep it.
"""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer

from psaq.data import DIGITS_CLASSES, digits_split
from psaq.models.train import TrainConfig, TrainResult, checkpoint_metadata, train_classifier

DIGITS_VIT_ARGS = dict(img_size=32, patch_size=8, embed_dim=96, depth=6, num_heads=3, mlp_ratio=4.0, num_classes=10)
DIGITS_TRAIN = dict(epochs=60, batch_size=64, lr=2e-3, weight_decay=0.05, warmup_epochs=3, label_smoothing=0.1,
                    max_shift_px=2, flip=False)  # no flips: a mirrored digit is another symbol


def digits_vit(**overrides) -> VisionTransformer:
    """timm's VisionTransformer in the DeiT layout (class token, learned positions), sized for digits."""
    return VisionTransformer(**{**DIGITS_VIT_ARGS, **overrides})


def train_digits_vit(cfg: TrainConfig = TrainConfig(), device="cpu", progress: bool = True,
                     model_args: dict | None = None) -> TrainResult:
    """``model_args`` overrides the architecture (tests train a shallower one in seconds)."""
    cfg = cfg.resolved(DIGITS_TRAIN)
    return train_classifier(lambda: digits_vit(**(model_args or {})), digits_split("train"), digits_split("test"),
                            cfg, "digits-vit", device, progress)


def train_for_store(cfg: TrainConfig, model_args: dict | None = None, progress: bool = True):
    """The trainer the model stage calls: (result, checkpoint metadata)."""
    cfg = cfg.resolved(DIGITS_TRAIN)
    result = train_digits_vit(cfg, progress=progress, model_args=model_args)
    return result, checkpoint_metadata(result, cfg, DIGITS_CLASSES)
