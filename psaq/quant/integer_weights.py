"""Compact integer weight files: int8, or int4 packed two to a byte, with every scale.

The file holds what an integer runtime needs (integer weights, per-channel weight scales,
per-tensor activation scales and zero points) plus the float parameters that stay float
(LayerNorm, biases, embeddings), and the metadata to rebuild the quantized model in PyTorch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from psaq.errors import CheckpointError
from psaq.models import ModelConfig, create_architecture
from psaq.models.checkpoint import write_safetensors
from psaq.quant.config import QuantConfig
from psaq.quant.layers import QuantConv2d, QuantLinear
from psaq.quant.quantize import quantize_, require_calibrated

INT8_SUFFIX, INT4_SUFFIX = ".int8", ".int4"
PACKED_INT4_MAX_BITS = 4


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Signed values in [-8, 7] → uint8, two per byte (first value in the low nibble)."""
    flat = q.flatten().to(torch.int16)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    nibbles = (flat & 0xF).to(torch.uint8)
    return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    nibbles = torch.stack([packed & 0xF, packed >> 4], dim=1).flatten().to(torch.int16)
    signed = torch.where(nibbles >= 8, nibbles - 16, nibbles).to(torch.int8)
    n = 1
    for d in shape:
        n *= d
    return signed[:n].reshape(shape)


def _quant_layers(model: nn.Module):
    for name, module in model.named_modules():
        if isinstance(module, (QuantLinear, QuantConv2d)):
            inner = "conv" if isinstance(module, QuantConv2d) else "linear"
            yield name, module, f"{name}.{inner}.weight"


def integer_state(model: nn.Module, config: QuantConfig) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """State dict with every quantized weight replaced by its integer form."""
    require_calibrated(model)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    shapes: dict[str, list[int]] = {}
    for _, module, key in _quant_layers(model):
        wq = module.weight_quantizer
        q = wq.integers(module.weight.detach()).cpu().to(torch.int8)
        del state[key]
        if config.w_bits <= PACKED_INT4_MAX_BITS:
            state[key + INT4_SUFFIX] = pack_int4(q)
            shapes[key] = list(q.shape)
        else:
            state[key + INT8_SUFFIX] = q.contiguous()
    return state, shapes


def save_integer_model(model: nn.Module, config: QuantConfig, build: dict, path: str | Path) -> Path:
    """``build``: the ModelConfig fields (name, model_args) that recreate the architecture."""
    state, shapes = integer_state(model, config)
    meta = {
        "format": "psaq-integer-v1",
        "quant_config": json.dumps(dataclasses.asdict(config)),
        "build": json.dumps(build),
        "int4_shapes": json.dumps(shapes),
        "weight_storage": "int4 packed two per byte" if shapes else "int8",
    }
    return write_safetensors(state, path, meta)


def load_integer_model(path: str | Path) -> nn.Module:
    """Rebuild the calibrated fake-quantized model from an integer weight file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"integer model '{path}' is missing, corrupt or not safetensors: {exc}") from exc
    if meta.get("format") != "psaq-integer-v1":
        raise CheckpointError(f"'{path}' is not a psaq integer model file")
    config = QuantConfig(**json.loads(meta["quant_config"]))
    build = json.loads(meta["build"])
    shapes = {k: tuple(v) for k, v in json.loads(meta["int4_shapes"]).items()}
    model = quantize_(create_architecture(ModelConfig(name=build["name"], model_args=build.get("model_args", {}))), config)
    state = {}
    for key, value in raw.items():
        if key.endswith(INT4_SUFFIX) or key.endswith(INT8_SUFFIX):
            base = key.rsplit(".", 1)[0]
            q = unpack_int4(value, shapes[base]) if key.endswith(INT4_SUFFIX) else value
            layer = base.rsplit(".", 2)[0]
            scale = raw[f"{layer}.weight_quantizer.scale"]
            state[base] = (q.to(torch.float32) * scale).to(torch.float32)
        else:
            state[key] = value
    model.load_state_dict(state, strict=True)
    return model.eval()
