"""What a model takes as input: image size, normalization, class count, the resize rule of its evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InputSpec:
    """What a model expects: (C, H, W), normalization, class count, and how images are resized
    for evaluation (resize the short side to H / crop_pct, then a centre crop of H)."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    class_names: tuple[str, ...] | None = None  # in output order, when the model or checkpoint says

    @property
    def headless(self) -> bool:
        """A backbone without a classifier (timm's ``num_classes=0``): it outputs pooled features."""
        return self.num_classes == 0

    def pixel_bounds(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel bounds, shape (1, C, 1, 1), of pixels in [0, 1] after normalization."""
        mean = torch.tensor(self.mean, device=device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device, dtype=dtype).view(1, -1, 1, 1)
        return (0.0 - mean) / std, (1.0 - mean) / std

    def preprocessing(self) -> dict:
        """The evaluation transform in plain terms, for code outside psaq (an exported ONNX model's
        metadata): read the image as ``mode``, resize its short side to ``resize`` pixels with
        ``interpolation``, centre-crop ``crop`` (height, width), scale pixels to [0, 1], subtract
        ``mean`` and divide by ``std`` per channel, and lay the result out as NCHW float32."""
        channels, height, width = self.input_size
        return {"mode": "RGB" if channels == 3 else "L", "resize": math.floor(min(height, width) / self.crop_pct),
                "crop": [height, width], "interpolation": self.interpolation, "scale": 1 / 255,
                "mean": list(self.mean), "std": list(self.std), "layout": "NCHW"}


def is_headless(model) -> bool:
    """A model without a classifier (timm's ``num_classes=0``): it outputs pooled features, not logits."""
    return getattr(model, "num_classes", None) == 0
