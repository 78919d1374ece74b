"""What a model takes as input: image size, normalization, class count, the resize rule of its evaluation."""

from __future__ import annotations

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

    def pixel_bounds(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel bounds, shape (1, C, 1, 1), of pixels in [0, 1] after normalization."""
        mean = torch.tensor(self.mean, device=device, dtype=dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=device, dtype=dtype).view(1, -1, 1, 1)
        return (0.0 - mean) / std, (1.0 - mean) / std
