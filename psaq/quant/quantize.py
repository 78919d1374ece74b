"""``quantize_(model, config)``: wrap a float model's modules in place; ``calibration(model)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import Attention, Block, VisionTransformer
import torch
from torch import nn

from psaq.errors import ConfigError, NotCalibratedError
from psaq.quant.config import QuantConfig
from psaq.quant.layers import QuantConv2d, QuantLinear
from psaq.quant.quantizers import ActQuantizer
from psaq.quant.timm_wrappers import (
    QuantSwinBlock,
    QuantViTAttention,
    QuantViTBlock,
    QuantWindowAttention,
    quantize_vit_sites,
)

Wrapper = Callable[[nn.Module, QuantConfig], nn.Module]

# Keyed by exact module type: a subclass may change forward(), so it must be registered itself.
WRAPPERS: dict[type[nn.Module], Wrapper] = {}


def register_wrapper(module_type: type[nn.Module]) -> Callable[[Wrapper], Wrapper]:
    def add(wrapper: Wrapper) -> Wrapper:
        WRAPPERS[module_type] = wrapper
        return wrapper

    return add


register_wrapper(nn.Linear)(QuantLinear)
register_wrapper(nn.Conv2d)(QuantConv2d)
register_wrapper(Attention)(QuantViTAttention)
register_wrapper(WindowAttention)(QuantWindowAttention)
register_wrapper(Block)(QuantViTBlock)
register_wrapper(SwinTransformerBlock)(QuantSwinBlock)
register_wrapper(VisionTransformer)(quantize_vit_sites)
register_wrapper(VisionTransformerDistilled)(quantize_vit_sites)

QUANT_TYPES = (QuantLinear, QuantConv2d, QuantViTAttention, QuantWindowAttention, QuantViTBlock, QuantSwinBlock)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QUANT_TYPES) for m in model.modules())


def quantize_(
    model: nn.Module,
    config: QuantConfig,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> nn.Module:
    """Wrap every registered module of ``model`` in place, children before parents.

    ``filter_fn(module, qualified_name)`` can skip modules. Returns ``model``.
    The model's activations pass through unchanged until it is calibrated.
    """
    if is_quantized(model):
        raise ConfigError("model is already quantized; quantize a fresh float copy")
    keep = filter_fn or (lambda module, name: True)

    def visit(module: nn.Module, prefix: str) -> nn.Module:
        for name, child in list(module.named_children()):
            new_child = visit(child, f"{prefix}.{name}" if prefix else name)
            if new_child is not child:
                setattr(module, name, new_child)
        wrapper = WRAPPERS.get(type(module))
        if wrapper is None or not keep(module, prefix):
            return module
        return wrapper(module, config)

    result = visit(model, "")
    if result is not model:
        raise ConfigError(f"the top-level {type(model).__name__} cannot be wrapped in place; wrap its parent instead")
    return model


def act_quantizers(model: nn.Module) -> Iterator[tuple[str, ActQuantizer]]:
    for name, module in model.named_modules():
        if isinstance(module, ActQuantizer):
            yield name, module


@contextmanager
def calibration(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: every activation quantizer records float ranges. On a clean exit the ranges
    are frozen into scales; on an exception nothing is frozen."""
    quantizers = [q for _, q in act_quantizers(model)]
    if not quantizers:
        raise ConfigError("model has no activation quantizers; call quantize_(model, config) first")
    for q in quantizers:
        q.start_observing()
    ok = False
    try:
        yield model
        ok = True
    finally:
        for q in quantizers:
            q.stop_observing(freeze=ok)


def uncalibrated(model: nn.Module) -> list[str]:
    """Names of the activation quantizers that have no frozen range yet."""
    return [name for name, q in act_quantizers(model) if not bool(q.calibrated)]


def require_calibrated(model: nn.Module) -> None:
    if not is_quantized(model):
        raise NotCalibratedError("model is not quantized; run quantize_ and calibration first")
    missing = uncalibrated(model)
    if missing:
        raise NotCalibratedError(
            f"{len(missing)} activation quantizer(s) were never calibrated (e.g. {missing[0]}); "
            "run the model on calibration data inside `with calibration(model):`"
        )


def calibrate(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Run the calibration images through the quantized model once and freeze every range."""
    model.eval().to(device)
    with torch.no_grad(), calibration(model):
        for i in range(0, images.shape[0], batch_size):
            model(images[i : i + batch_size].to(device))
    return model
