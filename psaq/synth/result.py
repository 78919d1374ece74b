"""What a calibration-set method is given (the model and where it runs) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from psaq.data import InputSpec, RealSource


@dataclass
class SynthesisResult:
    """Images in the model's normalized input space (N, C, H, W), float32 on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor  # pseudo-labels for psaq, true labels for real, -1 for noise
    history: dict[str, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0
    steps: int = 0

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.wall_s if self.steps and self.wall_s > 0 else float("nan")

    def final(self, term: str) -> float:
        values = self.history.get(term, [])
        return values[-1] if values else float("nan")


@dataclass
class SynthesisContext:
    model: nn.Module
    spec: InputSpec
    device: torch.device
    real_source: RealSource | None = None
    progress: bool = True
