"""Pure quantization math: integer ranges, qparams from a range, (fake) quantization.

The formulas are the official PSAQ-ViT code's (``models/quantization_utils/quant_utils.py``),
computed in the dtype of their inputs as it does. Everything broadcasts, so per-tensor and
per-channel use the same functions: pass ``scale`` and ``zero_point`` shaped to broadcast
against ``x``.
"""

from __future__ import annotations

import torch

from psaq.errors import ConfigError

MIN_SCALE = torch.finfo(torch.float32).eps  # the official floor of a scale (a constant tensor has range 0)
MIN_BITS, MAX_BITS = 2, 8


def check_bits(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer from {MIN_BITS} to {MAX_BITS}, got {value!r}")
    if not MIN_BITS <= value <= MAX_BITS:
        raise ConfigError(f"{name} must be from {MIN_BITS} to {MAX_BITS}, got {value}")


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """The integer grid of a ``bits``-wide integer: [-2^(b-1), 2^(b-1)-1] or [0, 2^b-1]."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def symmetric_qparams(min_val: torch.Tensor, max_val: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight rule: scale = max(−min, max) / ((qmax − qmin) / 2), zero point 0, signed grid.

    The scale maps the largest magnitude to ±(2^b − 1)/2, half a step outside the grid's
    positive end, so the largest positive weight rounds to qmax after clamping."""
    qmin, qmax = int_range(bits, signed=True)
    absmax = torch.maximum(-min_val, max_val)
    scale = (absmax / ((qmax - qmin) / 2)).clamp_min(MIN_SCALE)
    return scale, torch.zeros_like(scale)


def asymmetric_qparams(min_val: torch.Tensor, max_val: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The activation rule: [min, max] onto [0, 2^b − 1]; zero point = clamp(−round(min / scale)).

    As in the official code the range is not widened to hold 0: for a range that excludes 0
    the zero point is clamped to the grid, so the grid no longer covers the whole range."""
    qmin, qmax = int_range(bits, signed=False)
    scale = ((max_val - min_val) / (qmax - qmin)).clamp_min(MIN_SCALE)
    zero_point = (qmin - torch.round(min_val / scale)).clamp(qmin, qmax)
    return scale, zero_point


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Real values to integers (kept in x's float dtype): clamp(round(x / s + z)), rounding half to even."""
    return torch.clamp(torch.round(x / scale + zero_point), qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return (q - zero_point) * scale


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Quantize then dequantize: the value an integer kernel would see, in float.

    Where no gradient is recorded, the same operations in the same order run in place on one
    new tensor (the same values, without five temporaries per activation)."""
    if torch.is_grad_enabled() and (x.requires_grad or scale.requires_grad or zero_point.requires_grad):
        return dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point)
    q = x / scale
    return q.add_(zero_point).round_().clamp_(qmin, qmax).sub_(zero_point).mul_(scale)


def channel_shape(x: torch.Tensor, axis: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector along ``axis`` of ``x``."""
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    return tuple(shape)
