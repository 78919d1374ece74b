"""Quantized wrappers of torch layers: the float layer, its weight quantizer, and taps.

A *tap* is a point where an activation quantizer may sit; ``Taps`` (``psaq.quant.sites``) holds
the quantizers that the site plan puts at a module's taps (none, when the site set leaves them float).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from psaq.quant.config import QuantConfig
from psaq.quant.quantizers import WeightQuantizer
from psaq.quant.sites import Taps


def weight_quantizer(weight: torch.Tensor, config: QuantConfig) -> WeightQuantizer:
    return WeightQuantizer(weight.detach(), config.w_bits, config.weight_observer, percentile=config.percentile)


class _QuantWeighted(nn.Module):
    """A layer with a weight quantizer and taps at its input and output, given by its role
    (e.g. an attention's ``proj``: ``attn.context`` in, ``attn.proj`` out)."""

    def __init__(self, layer: nn.Module, config: QuantConfig, plan, inputs: Iterable[str | None],
                 outputs: Iterable[str | None]):
        super().__init__()
        inputs, outputs = [s for s in inputs if s], [s for s in outputs if s]
        self.inputs, self.input_sites = Taps(plan, inputs), tuple(inputs)
        self.outputs, self.output_sites = Taps(plan, outputs), tuple(outputs)
        self.weight_quantizer = weight_quantizer(layer.weight, config)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        for site in self.input_sites:
            x = self.inputs(site, x)
        return x

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        for site in self.output_sites:
            x = self.outputs(site, x)
        return x


class QuantLinear(_QuantWeighted):
    """``q_out(linear(q_in(x), q_w(W)) + b)``; the bias stays float (int32 in a real kernel)."""

    def __init__(self, linear: nn.Linear, config: QuantConfig, plan, inputs: Iterable[str | None] = (),
                 outputs: Iterable[str | None] = ()):
        super().__init__(linear, config, plan, inputs, outputs)
        self.linear = linear

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(F.linear(self._in(x), self.weight_quantizer(self.linear.weight), self.linear.bias))


class QuantConv2d(_QuantWeighted):
    """The patch embedding's convolution, quantized like a linear layer."""

    def __init__(self, conv: nn.Conv2d, config: QuantConfig, plan, inputs: Iterable[str | None] = (),
                 outputs: Iterable[str | None] = ()):
        super().__init__(conv, config, plan, inputs, outputs)
        self.conv = conv

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.conv._conv_forward(self._in(x), self.weight_quantizer(self.conv.weight), self.conv.bias))


class QuantOutput(nn.Module):
    """Quantizes a module's output at ``site`` (e.g. the patch embedding's, the final norm's)."""

    def __init__(self, inner: nn.Module, plan, site: str):
        super().__init__()
        self.inner = inner
        self.site = site
        self.taps = Taps(plan, [site])

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.taps(self.site, self.inner(*args, **kwargs))
