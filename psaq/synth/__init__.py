"""Calibration-set synthesis: ``synthesize(model, SynthesisConfig(...), spec)``."""

from __future__ import annotations

import torch
from torch import nn

from psaq.data import InputSpec, RealSource
from psaq.device import resolve_device
from psaq.synth.config import SynthesisConfig
from psaq.synth.memory import check_memory
from psaq.synth.methods import SYNTH_METHODS
from psaq.synth.result import SynthesisContext, SynthesisResult


def synthesize(
    model: nn.Module,
    config: SynthesisConfig,
    spec: InputSpec,
    device: str | torch.device | None = None,
    real_source: RealSource | None = None,
    progress: bool = True,
) -> SynthesisResult:
    """Make ``config.num_samples`` calibration images for ``model`` by ``config.method``.

    The model is moved to ``device``; the returned images are float32 on the CPU.
    """
    dev = resolve_device(device)
    check_memory(config, spec, dev)
    model.to(dev)
    ctx = SynthesisContext(model, spec, dev, real_source, progress)
    return SYNTH_METHODS.get(config.method)(config, ctx)


__all__ = ["SYNTH_METHODS", "SynthesisConfig", "SynthesisResult", "synthesize"]
