"""Quantized wrappers of torch layers: the float layer plus an input and a weight quantizer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from psaq.quant.config import QuantConfig
from psaq.quant.quantizers import ActQuantizer, WeightQuantizer


def act_quantizer(config: QuantConfig) -> ActQuantizer:
    return ActQuantizer(config.a_bits, config.act_observer, percentile=config.percentile)


def weight_quantizer(weight: torch.Tensor, config: QuantConfig) -> WeightQuantizer:
    return WeightQuantizer(weight.detach(), config.w_bits, config.weight_observer, percentile=config.percentile)


class QuantLinear(nn.Module):
    """``linear(q_a(x), q_w(W)) + b``; the bias stays in float (int32 in a real kernel)."""

    def __init__(self, linear: nn.Linear, config: QuantConfig):
        super().__init__()
        self.linear = linear
        self.input_quantizer = act_quantizer(config)
        self.weight_quantizer = weight_quantizer(linear.weight, config)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.weight_quantizer(self.linear.weight), self.linear.bias)


class QuantConv2d(nn.Module):
    """The patch embedding's convolution, quantized like a linear layer."""

    def __init__(self, conv: nn.Conv2d, config: QuantConfig):
        super().__init__()
        self.conv = conv
        self.input_quantizer = act_quantizer(config)
        self.weight_quantizer = weight_quantizer(conv.weight, config)

    @property
    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv._conv_forward(self.input_quantizer(x), self.weight_quantizer(self.conv.weight), self.conv.bias)


class QuantOutput(nn.Module):
    """Quantizes a module's output, e.g. the positional-embedding sum at ``pos_drop``."""

    def __init__(self, inner: nn.Module, config: QuantConfig):
        super().__init__()
        self.inner = inner
        self.output_quantizer = act_quantizer(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_quantizer(self.inner(x))
