"""Observers record statistics of the tensors they see and turn them into a range.

They are chosen by name from ``OBSERVERS``. The qparams math stays in ``primitives``;
an observer only decides *which range* to quantize.
"""

from __future__ import annotations

import inspect

import torch

from psaq.quant.primitives import asymmetric_qparams, fake_quantize, int_range, symmetric_qparams
from psaq.registry import Registry

OBSERVERS: Registry[type[Observer]] = Registry("observer")

MAX_KEPT_VALUES = 1 << 20  # per-tensor sample kept by percentile/MSE observers; bounds memory on big activations


class Observer:
    """Base observer. ``axis=None`` is per tensor; an int keeps one range per channel along it."""

    def __init__(self, bits: int, symmetric: bool, axis: int | None = None):
        self.bits, self.symmetric, self.axis = bits, symmetric, axis
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None

    @property
    def seen(self) -> bool:
        return self.min_val is not None

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """x as (channels, values), or (1, values) per tensor."""
        x = x.detach()
        if self.axis is None:
            return x.reshape(1, -1)
        return x.movedim(self.axis, 0).reshape(x.shape[self.axis], -1)

    def update(self, x: torch.Tensor) -> None:
        rows = self._rows(x)
        lo, hi = rows.amin(dim=1), rows.amax(dim=1)
        if self.min_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)

    def compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.seen:
            raise RuntimeError("observer saw no data")
        return self.min_val, self.max_val

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point), one per channel (shape (C,)) or per tensor (shape (1,)), in the
        dtype of the observed values (the official code computes them in the model's dtype)."""
        lo, hi = self.compute_range()
        rule = symmetric_qparams if self.symmetric else asymmetric_qparams
        return rule(lo, hi, self.bits)


@OBSERVERS.register("minmax")
class MinMaxObserver(Observer):
    """The paper's rule: the full observed range."""


class _SampleKeepingObserver(Observer):
    """Keeps a bounded, deterministic sample of the values seen (for range searches)."""

    def __init__(self, bits: int, symmetric: bool, axis: int | None = None):
        super().__init__(bits, symmetric, axis)
        self._kept: list[torch.Tensor] = []

    def update(self, x: torch.Tensor) -> None:
        super().update(x)
        rows = self._rows(x).float()
        budget = MAX_KEPT_VALUES // max(1, rows.shape[0])
        if rows.shape[1] > budget:
            stride = -(-rows.shape[1] // budget)
            rows = rows[:, ::stride]
        self._kept.append(rows)
        kept = torch.cat(self._kept, dim=1)
        if kept.shape[1] > budget:
            kept = kept[:, :: -(-kept.shape[1] // budget)]
        self._kept = [kept]

    def values(self) -> torch.Tensor:
        return self._kept[0]


@OBSERVERS.register("percentile")
class PercentileObserver(_SampleKeepingObserver):
    """Clips the tails: the range between the (100 - p) and p percentiles."""

    def __init__(self, bits: int, symmetric: bool, axis: int | None = None, percentile: float = 99.99):
        super().__init__(bits, symmetric, axis)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        super().compute_range()
        v = self.values()
        q = torch.tensor([1.0 - self.percentile / 100.0, self.percentile / 100.0], device=v.device)
        lo, hi = torch.quantile(v, q, dim=1)
        return lo, hi


@OBSERVERS.register("mse")
class MSEObserver(_SampleKeepingObserver):
    """The range α·[min, max] (α on a grid in (0, 1]) with the least fake-quantization error."""

    def __init__(self, bits: int, symmetric: bool, axis: int | None = None, grid: int = 100):
        super().__init__(bits, symmetric, axis)
        self.grid = grid

    def compute_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = super().compute_range()
        v = self.values()
        qmin, qmax = int_range(self.bits, signed=self.symmetric)
        rule = symmetric_qparams if self.symmetric else asymmetric_qparams
        best_err = torch.full_like(lo, float("inf"), dtype=torch.float32)
        best_lo, best_hi = lo.clone(), hi.clone()
        for i in range(1, self.grid + 1):
            alpha = i / self.grid
            cand_lo, cand_hi = lo * alpha, hi * alpha
            scale, zp = rule(cand_lo.float(), cand_hi.float(), self.bits)
            err = (fake_quantize(v, scale[:, None], zp[:, None], qmin, qmax) - v).pow(2).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, cand_lo, best_lo)
            best_hi = torch.where(better, cand_hi, best_hi)
        return best_lo, best_hi


def make_observer(name: str, bits: int, symmetric: bool, axis: int | None = None, **options) -> Observer:
    """Build an observer by name; options a class does not take are ignored."""
    cls = OBSERVERS.get(name)
    accepted = {k: v for k, v in options.items() if k in inspect.signature(cls).parameters}
    return cls(bits, symmetric, axis, **accepted)
