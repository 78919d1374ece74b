"""Quantizer modules: the float layer stays as it is, quantizers sit beside it (as in Brevitas)."""

from __future__ import annotations

import torch
from torch import nn

from psaq.quant.observers import make_observer
from psaq.quant.primitives import channel_shape, fake_quantize, int_range, quantize


class ActQuantizer(nn.Module):
    """Asymmetric per-tensor activation quantizer.

    Three states: pass-through (before calibration), observing (inside
    ``calibration(model)``: records the float values, returns them unchanged) and
    quantizing (after calibration: fake-quantizes with the frozen scale).
    """

    def __init__(self, bits: int, observer: str = "minmax", site: str = "", **observer_options):
        super().__init__()
        self.bits = bits
        self.site = site  # which tensor (a name of psaq.quant.sites.SITES)
        self.observer_name = observer
        self.observer_options = observer_options
        self.qmin, self.qmax = int_range(bits, signed=False)
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1))
        self.register_buffer("calibrated", torch.tensor(False))
        self.observer = None
        self.export_qdq = False  # set by psaq.quant.onnx_export while tracing for ONNX

    @property
    def observing(self) -> bool:
        return self.observer is not None

    def start_observing(self) -> None:
        self.observer = make_observer(self.observer_name, self.bits, symmetric=False, **self.observer_options)

    def stop_observing(self, freeze: bool) -> None:
        """Freeze the observed range into scale/zero point (if anything was seen), drop the observer."""
        observer, self.observer = self.observer, None
        if freeze and observer is not None and observer.seen:
            scale, zero_point = observer.qparams()
            self.scale.copy_(scale.reshape(1))
            self.zero_point.copy_(zero_point.reshape(1))
            self.calibrated.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.update(x)
            return x
        if not self.calibrated:
            return x
        if self.export_qdq:
            return self._qdq(x)
        return fake_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax).to(x.dtype)

    def _qdq(self, x: torch.Tensor) -> torch.Tensor:
        """The same values through ops that export as QuantizeLinear/DequantizeLinear (uint8).
        Below 8 bits a Clip to the b-bit range keeps the lower-bit grid inside uint8."""
        scale, zp = float(self.scale), int(self.zero_point)
        if self.qmax < 255:
            x = torch.clamp(x, (self.qmin - zp) * scale, (self.qmax - zp) * scale)
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)

    def extra_repr(self) -> str:
        state = "observing" if self.observing else ("calibrated" if bool(self.calibrated) else "pass-through")
        return f"site={self.site}, bits={self.bits}, observer={self.observer_name}, {state}"


class WeightQuantizer(nn.Module):
    """Symmetric per-output-channel weight quantizer; needs no data, so qparams are set at wrap time."""

    def __init__(self, weight: torch.Tensor, bits: int, observer: str = "minmax", axis: int = 0, **observer_options):
        super().__init__()
        self.bits, self.axis = bits, axis
        self.qmin, self.qmax = int_range(bits, signed=True)
        obs = make_observer(observer, bits, symmetric=True, axis=axis, **observer_options)
        obs.update(weight)
        scale, zero_point = obs.qparams()
        self.register_buffer("scale", scale.reshape(channel_shape(weight, axis)).to(weight.device))
        self.register_buffer("zero_point", zero_point.reshape(channel_shape(weight, axis)).to(weight.device))
        self._cached: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self.export_qdq = False
        self.enabled = True  # off while calibrating on the float model (the official order)

    def integers(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer grid values of ``weight`` (in its float dtype), computed as the simulated
        forward computes them, so integer exports and the simulation agree at every rounding tie."""
        return quantize(weight.detach(), self.scale.to(weight.dtype), self.zero_point.to(weight.dtype), self.qmin, self.qmax)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        # Cached: weights are fixed in post-training quantization.
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._cache_key != key:
            q = self.integers(weight)
            self._cached, self._cache_key = (q - self.zero_point.to(weight.dtype)) * self.scale.to(weight.dtype), key
        if self.export_qdq:
            # Values already on the b-bit grid, so QuantizeLinear reproduces them exactly. They are
            # stored as uint8 with zero point 128 (the same values): ONNX Runtime's u8×s8 kernel on
            # x86 CPUs without VNNI sums pairs of products in int16 and saturates on 8-bit weights;
            # its u8×u8 kernel does not.
            zp = (self.zero_point.flatten() + 128).to(torch.int32)
            return torch.fake_quantize_per_channel_affine(self._cached, self.scale.flatten().float(), zp, self.axis, 0, 255)
        return self._cached

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per-channel axis={self.axis}"
