"""Save a calibrated fake-quantized model (float weights + every scale) and rebuild it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import nn

from psaq.errors import CheckpointError
from psaq.models.checkpoint import load_checkpoint, read_state_dict, save_checkpoint
from psaq.quant.config import QuantConfig
from psaq.quant.quantize import quantize_, require_calibrated

CONFIG_KEY = "psaq_quant_config"


def save_quantized(model: nn.Module, config: QuantConfig, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    require_calibrated(model)
    meta = {**(metadata or {}), CONFIG_KEY: json.dumps(dataclasses.asdict(config))}
    return save_checkpoint(model, path, meta)


def read_quant_config(path: str | Path) -> QuantConfig:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(f"quantized model '{path}' is corrupt or not safetensors: {exc}") from exc
    if CONFIG_KEY not in meta:
        raise CheckpointError(f"'{path}' is not a psaq quantized model (no quantization config in its metadata)")
    return QuantConfig(**json.loads(meta[CONFIG_KEY]))


def load_quantized(float_model: nn.Module, path: str | Path) -> nn.Module:
    """Wrap ``float_model`` with the saved config, then load weights and scales strictly."""
    read_state_dict(path)  # refuse missing/corrupt files before touching the model
    model = quantize_(float_model, read_quant_config(path))
    load_checkpoint(model, path)
    require_calibrated(model)
    return model


def activation_scales(path: str | Path) -> dict[str, float]:
    """The calibrated step of every per-tensor activation quantizer in a saved quantized model, by
    site: at equal bits, a range's width is its step times the grid's size, so steps compare ranges."""
    from psaq.models.checkpoint import read_state_dict

    return {key[: -len(".scale")]: float(value) for key, value in read_state_dict(path).items()
            if ".quantizers." in key and key.endswith(".scale") and value.numel() == 1}
