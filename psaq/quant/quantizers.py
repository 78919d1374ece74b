"""Quantizer modules: the float layer stays as it is, quantizers sit beside it (as in Brevitas)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from psaq.quant.observers import make_observer
from psaq.quant.primitives import channel_shape, fake_quantize, int_range, quantize


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity in the backward pass (straight-through)."""
    return (x.round() - x).detach() + x


# The exported ONNX model stores signed weight grids as uint8 shifted by this (see WeightQuantizer.forward).
ONNX_WEIGHT_ZERO_POINT = 128

class ActQuantizer(nn.Module):
    """Asymmetric activation quantizer, per tensor (``axis=None``) or per channel of the last axis.

    Three states: pass-through (before calibration), observing (inside ``calibration(model)``:
    records the float values, returns them unchanged) and quantizing (after calibration:
    fake-quantizes with the frozen scale). ``folded``: calibrated per channel, then turned into a
    per-tensor quantizer by ``psaq.quant.fold`` (its scales go into the layers around it).

    Inside ``learning(...)`` (below) its scale can be a parameter (LSQ: straight-through rounding),
    its gradient pass straight through round(), and its quantization be dropped at random (QDrop).

    What a kind can do, declared on its class (callers ask these, never the class):
    ``learnable_scale`` (reconstruction and V2 may learn its step size), ``onnx_export`` (how
    it reaches ONNX: ``"qdq"``, QuantizeLinear/DequantizeLinear; ``"float-ops"``, the same float
    ops as its forward). A kind with a forward of its own must declare its export: inheriting
    ``"qdq"`` silently would export it as the uniform quantizer it is not.
    """

    learnable_scale = True
    onnx_export = "qdq"
    # straight-through gradients stop where the forward clips; False passes them everywhere (how
    # psaq's V2 ran before, kept to measure the change: benchmarks/v2.py --unclipped-ste)
    clip_straight_through = True

    def __init__(self, bits: int, observer: str = "minmax", site: str = "", axis: int | None = None,
                 folded: bool = False, **observer_options):
        super().__init__()
        self.bits = bits
        self.site = site  # which tensor (a name of psaq.quant.sites.SITE_NAMES)
        self.axis, self.folded = axis, folded
        self.observer_name = observer
        self.observer_options = observer_options
        self.qmin, self.qmax = int_range(bits, signed=False)
        self.register_buffer("scale", torch.ones(1))
        self.register_buffer("zero_point", torch.zeros(1))
        self.register_buffer("calibrated", torch.tensor(False))
        self.observer = None
        self.export_qdq = False  # set by psaq.quant.onnx_export while tracing for ONNX
        self.learned_scale: nn.Parameter | None = None
        self.drop_prob = 0.0
        # gradients pass straight through round() (values unchanged); the official forward has none
        self.straight_through = False

    @property
    def observing(self) -> bool:
        return self.observer is not None

    def start_observing(self) -> None:
        self.observer = make_observer(self.observer_name, self.bits, symmetric=False, axis=self.axis,
                                      **self.observer_options)

    def stop_observing(self, freeze: bool) -> None:
        """Freeze the observed range into scale/zero point (if anything was seen), drop the observer."""
        observer, self.observer = self.observer, None
        if freeze and observer is not None and observer.seen:
            scale, zero_point = observer.qparams()
            self.set_qparams(scale.reshape(-1), zero_point.reshape(-1))

    def set_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """One scale per tensor (shape (1,)) or per channel (shape (C,)); marks the quantizer calibrated."""
        self.scale = scale.detach().to(self.scale.dtype).clone()
        self.zero_point = zero_point.detach().to(self.zero_point.dtype).clone()
        self.calibrated.fill_(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a per-channel quantizer's scales have their channel count only once calibrated
        for name in ("scale", "zero_point"):
            saved = state_dict.get(prefix + name)
            if saved is not None and saved.shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(saved, dtype=getattr(self, name).dtype))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.update(x)
            return x
        if not self.calibrated:
            return x
        if self.export_qdq:
            return self._qdq(x)
        if self.learned_scale is not None:
            scale = self.learned_scale.abs().clamp_min(1e-8)
            q = torch.clamp(round_ste(x / scale + self.zero_point), self.qmin, self.qmax)
            out = (q - self.zero_point) * scale
        else:
            out = fake_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax).to(x.dtype)
            if self.straight_through and not self.clip_straight_through:
                out = x + (out - x).detach()  # the identity everywhere: psaq's V2 before the fix (measured against it)
            elif self.straight_through:
                # the gradient passes where the grid reaches and stops where the forward clips, as
                # LSQ's does: passed through a clipped value it pushes the weights that make it ever
                # further past the range, which the forward never shows (V2's weights-only student
                # left its teacher that way on a Swin at W4A4)
                lo = ((self.qmin - self.zero_point) * self.scale).to(x.dtype)
                hi = ((self.qmax - self.zero_point) * self.scale).to(x.dtype)
                reached = ((x >= lo) & (x <= hi)).to(x.dtype)
                out = out.detach() + (x - x.detach()) * reached
        if self.drop_prob and self.training:
            keep = torch.rand_like(x) < self.drop_prob
            out = torch.where(keep, x, out)
        return out

    def _qdq(self, x: torch.Tensor) -> torch.Tensor:
        """The same values through ops that export as QuantizeLinear/DequantizeLinear (uint8).
        Below 8 bits a Clip to the b-bit range keeps the lower-bit grid inside uint8."""
        if self.scale.numel() > 1:
            zp = self.zero_point.to(torch.int32)
            lo, hi = (self.qmin - self.zero_point) * self.scale, (self.qmax - self.zero_point) * self.scale
            x = torch.maximum(torch.minimum(x, hi), lo) if self.qmax < 255 else x
            return torch.fake_quantize_per_channel_affine(x, self.scale.float(), zp, x.dim() - 1, 0, 255)
        scale, zp = float(self.scale), int(self.zero_point)
        if self.qmax < 255:
            x = torch.clamp(x, (self.qmin - zp) * scale, (self.qmax - zp) * scale)
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, 0, 255)

    @property
    def granularity(self) -> str:
        return "per tensor" if self.scale.numel() == 1 and self.axis is None else "per channel"

    def extra_repr(self) -> str:
        state = "observing" if self.observing else ("calibrated" if bool(self.calibrated) else "pass-through")
        return f"site={self.site}, bits={self.bits}, {self.granularity}, observer={self.observer_name}, {state}"


class Log2Quantizer(ActQuantizer):
    """Probabilities in [0, 1] onto powers of two: p → 2^−q with q = round(−log2 p) in
    [0, 2^b − 1], and p below 2^−(2^b − 1) → 0. Needs no range (FQ-ViT's log-int softmax)."""

    learnable_scale = False  # no step size: the grid is the powers of two
    onnx_export = "float-ops"  # ONNX has no integer kernel for it: Log, Round, Clip, Pow, Where

    def start_observing(self) -> None:
        self.observer = _Seen()

    def stop_observing(self, freeze: bool) -> None:
        observer, self.observer = self.observer, None
        if freeze and observer is not None and observer.seen:
            self.calibrated.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.seen = True
            return x
        if not self.calibrated:
            return x
        # the same float ops on the simulated path and in ONNX (Log, Round, Clip, Pow, Where):
        # an exact decomposition; ONNX has no integer kernel for it
        q = torch.round(-torch.log2(x.clamp_min(2.0 ** -(self.qmax + 2))))
        out = torch.where(q > self.qmax, torch.zeros_like(x), torch.pow(2.0, -q.clamp(self.qmin, self.qmax)))
        if self.straight_through:
            out = x + (out - x).detach()
        if self.drop_prob and self.training:
            out = torch.where(torch.rand_like(x) < self.drop_prob, x, out)
        return out.to(x.dtype)


class _Seen:
    seen = False


QUANTIZER_KINDS: dict[str, type[ActQuantizer]] = {"uniform": ActQuantizer, "log2": Log2Quantizer}


class WeightQuantizer(nn.Module):
    """Symmetric per-output-channel weight quantizer; needs no data, so qparams are set at wrap time.

    Inside ``learning(rounding=...)`` its rounding is replaced (AdaRound's floor(W/s) + h(V) instead of
    round(W/s), V2's latent weights)."""

    def __init__(self, weight: torch.Tensor, bits: int, observer: str = "minmax", axis: int = 0, **observer_options):
        super().__init__()
        self.bits, self.axis = bits, axis
        self.observer_name, self.observer_options = observer, observer_options
        self.qmin, self.qmax = int_range(bits, signed=True)
        scale, zero_point = self._qparams(weight)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self._cached: torch.Tensor | None = None
        self._cache_key: tuple | None = None
        self.export_qdq = False
        self.enabled = True  # off while calibrating on the float model (the official order)
        self.soft_rounding = None  # a callable (weight) → soft-quantized weight, during reconstruction

    def _qparams(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        obs = make_observer(self.observer_name, self.bits, symmetric=True, axis=self.axis, **self.observer_options)
        obs.update(weight.detach())
        scale, zero_point = obs.qparams()
        shape = channel_shape(weight, self.axis)
        return scale.reshape(shape).to(weight.device), zero_point.reshape(shape).to(weight.device)

    def recompute(self, weight: torch.Tensor) -> None:
        """New scales for changed weights (after folding activation scales into them)."""
        scale, zero_point = self._qparams(weight)
        self.scale, self.zero_point = scale.to(self.scale.dtype), zero_point.to(self.zero_point.dtype)
        self._cache_key = None

    def integers(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer grid values of ``weight`` (in its float dtype), computed as the simulated
        forward computes them, so integer exports and the simulation agree at every rounding tie."""
        return quantize(weight.detach(), self.scale.to(weight.dtype), self.zero_point.to(weight.dtype), self.qmin, self.qmax)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        if self.soft_rounding is not None:
            return self.soft_rounding(weight)
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
            zp = (self.zero_point.flatten() + ONNX_WEIGHT_ZERO_POINT).to(torch.int32)
            return torch.fake_quantize_per_channel_affine(self._cached, self.scale.flatten().float(), zp, self.axis, 0, 255)
        return self._cached

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per-channel axis={self.axis}"


@contextmanager
def learning(acts: Iterable[ActQuantizer] = (), *, scales: Iterable[ActQuantizer] = (), straight_through: bool = False,
             drop_prob: float = 0.0, rounding: dict[WeightQuantizer, Callable[[torch.Tensor], torch.Tensor]] | None = None,
             ) -> Iterator[list[nn.Parameter]]:
    """Quantizers with learning parts swapped in for the duration; on exit, whatever happened, every
    part is back to its default and each learned scale is frozen into its quantizer's qparams.

    ``acts``: activation quantizers whose gradient passes straight through round() (``straight_through``)
    and whose output keeps the float value with probability ``drop_prob`` in training mode (QDrop).
    ``scales``: activation quantizers whose scale becomes a parameter (LSQ), yielded in this order.
    ``rounding``: a weight quantizer → the callable that replaces its rounding (AdaRound's soft
    rounding, V2's latent weights). The caller writes hardened weights before the block ends.
    """
    acts, scales, rounding = list(acts), list(scales), dict(rounding or {})
    for a in acts:
        a.straight_through, a.drop_prob = straight_through, drop_prob
    for wq, fn in rounding.items():
        wq.soft_rounding = fn
    for a in scales:
        a.learned_scale = nn.Parameter(a.scale.detach().clone())
    try:
        yield [a.learned_scale for a in scales]
    finally:
        for wq in rounding:
            wq.soft_rounding = None
        for a in scales:
            if a.learned_scale is not None:
                a.set_qparams(a.learned_scale.detach().abs().clamp_min(1e-8).reshape(-1), a.zero_point.reshape(-1))
                a.learned_scale = None
        for a in acts:
            a.straight_through, a.drop_prob = False, 0.0
