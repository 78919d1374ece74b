"""Pure quantization math: integer ranges, qparams from a range, (fake) quantization.

Everything broadcasts, so per-tensor and per-channel use the same functions: pass
``scale`` and ``zero_point`` shaped to broadcast against ``x``.
"""

from __future__ import annotations

import torch

MIN_SCALE = 1e-8  # keeps a constant tensor (range zero) from dividing by zero
MIN_BITS, MAX_BITS = 2, 8


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """The integer grid of a ``bits``-wide integer: [-2^(b-1), 2^(b-1)-1] or [0, 2^b-1]."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def symmetric_qparams(min_val: torch.Tensor, max_val: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PSAQ-ViT's weight rule: scale = max(|min|, |max|) / ((qmax - qmin) / 2), zero point 0, signed grid."""
    qmin, qmax = int_range(bits, signed=True)
    absmax = torch.maximum(min_val.abs(), max_val.abs())
    scale = (absmax / ((qmax - qmin) / 2)).clamp_min(MIN_SCALE)
    return scale, torch.zeros_like(scale)


def asymmetric_qparams(min_val: torch.Tensor, max_val: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Activation rule: the range [min, max] (widened to hold 0) onto the unsigned grid.

    The range is widened to contain zero so that zero is exact and the zero point is a
    valid unsigned integer, which ONNX QuantizeLinear requires.
    """
    qmin, qmax = int_range(bits, signed=False)
    lo = torch.minimum(min_val, torch.zeros_like(min_val))
    hi = torch.maximum(max_val, torch.zeros_like(max_val))
    scale = ((hi - lo) / (qmax - qmin)).clamp_min(MIN_SCALE)
    zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return scale, zero_point


def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Real values to integers (kept in x's float dtype): clamp(round(x / s) + z)."""
    return torch.clamp(torch.round(x / scale) + zero_point, qmin, qmax)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    return (q - zero_point) * scale


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Quantize then dequantize: the value an integer kernel would see, in float."""
    return dequantize(quantize(x, scale, zero_point, qmin, qmax), scale, zero_point)


def channel_shape(x: torch.Tensor, axis: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel vector along ``axis`` of ``x``."""
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    return tuple(shape)
