"""``quantize_(model, config)``: wrap a float model's modules in place; ``calibration(model)``.

What to wrap, and which sites each child's input and output are, is the model family's
(``psaq.families``): its wrappers by exact module type, its roles by (parent type, attribute).
Linear and convolution children of any family become ``QuantLinear``/``QuantConv2d``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from psaq.input_spec import is_headless
from psaq import cancel
from psaq.errors import ConfigError, NotCalibratedError
from psaq.families import Family, family_of
from psaq.quant.config import QuantConfig
from psaq.quant.fold import fold_norm_scales, folding_pending, give_fold_targets_a_bias
from psaq.quant.layers import QuantConv2d, QuantLinear, QuantOutput
from psaq.quant.quantizers import ActQuantizer, WeightQuantizer
from psaq.quant.sites import SitePlan, Taps

EVERY_LINEAR_INPUT = "linear.input"


def is_quantized(model: nn.Module) -> bool:
    # every wrapper a family or this module puts in place holds its taps or a weight quantizer
    return any(isinstance(m, (QuantLinear, QuantConv2d, QuantOutput, Taps)) for m in model.modules())


def _wrap_child(parent: nn.Module, name: str, child: nn.Module, config: QuantConfig, plan: SitePlan,
                family: Family) -> nn.Module:
    inputs, outputs = family.roles.get((type(parent), name), ((), ()))
    if type(child) is nn.Linear:
        return QuantLinear(child, config, plan, (*inputs, EVERY_LINEAR_INPUT), outputs)
    if type(child) is nn.Conv2d:
        return QuantConv2d(child, config, plan, inputs, outputs)
    for site in outputs:
        if site in plan:
            child = QuantOutput(child, plan, site)
    return child


def quantize_(
    model: nn.Module,
    config: QuantConfig,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> nn.Module:
    """Wrap ``model`` in place, children before parents, with the quantizers of ``config.sites``.

    ``filter_fn(module, qualified_name)`` can skip modules (their sites then stay float, and
    the completeness check is skipped). Returns ``model``. The model's activations pass
    through unchanged until it is calibrated.
    """
    if is_quantized(model):
        raise ConfigError("model is already quantized; quantize a fresh float copy")
    family = family_of(model)
    plan = SitePlan(config.sites, family, config)
    keep = filter_fn or (lambda module, name: True)

    def visit(module: nn.Module, prefix: str) -> nn.Module:
        for name, child in list(module.named_children()):
            qualified = f"{prefix}.{name}" if prefix else name
            new_child = visit(child, qualified)
            if keep(child, qualified):
                new_child = _wrap_child(module, name, new_child, config, plan, family)
            if new_child is not child:
                setattr(module, name, new_child)
        wrapper = family.wrappers.get(type(module))
        if wrapper is None or not keep(module, prefix):
            return module
        return wrapper(module, config, plan)

    result = visit(model, "")
    if result is not model:
        raise ConfigError(f"the top-level {type(model).__name__} cannot be wrapped in place; wrap its parent instead")
    if filter_fn is None:
        # a headless backbone (timm's num_classes=0) has no classifier, so no classifier input; its
        # output (the pooled features) takes the output site's quantizer as logits would
        headless = is_headless(model)
        plan.check_complete(type(model).__name__, ("head_input",) if headless else ())
    give_fold_targets_a_bias(model)
    # quantizer buffers (scales, zero points) in the model's float type, as the official code keeps them
    dtype = next(model.parameters()).dtype
    for m in model.modules():
        if isinstance(m, (ActQuantizer, WeightQuantizer)):
            m.to(dtype)
    model.psaq_quant_config = config
    return model


def act_quantizers(model: nn.Module) -> Iterator[tuple[str, ActQuantizer]]:
    for name, module in model.named_modules():
        if isinstance(module, ActQuantizer):
            yield name, module


@contextmanager
def calibration(model: nn.Module, quantized_weights: bool | None = None) -> Iterator[nn.Module]:
    """Inside: every activation quantizer records the float ranges it sees and passes them on.
    On a clean exit the ranges are frozen into scales; on an exception nothing is frozen.

    As in the official code the ranges are taken on the float model: weights stay float while
    calibrating, unless ``quantized_weights`` (psaq's option; by default the model's
    ``QuantConfig.calibrate_with_quantized_weights``) rounds them first."""
    if quantized_weights is None:
        config = getattr(model, "psaq_quant_config", None)
        quantized_weights = bool(config and config.calibrate_with_quantized_weights)
    named = list(act_quantizers(model))
    quantizers = [q for _, q in named]
    if not quantizers:
        raise ConfigError("model has no activation quantizers; call quantize_(model, config) first")
    folded = [name for name, q in named if q.folded and bool(q.calibrated)]
    if folded:
        # folding moved per-channel scales into the LayerNorm and the next linear's weights: observing
        # again would fold them a second time into weights that already hold them
        raise ConfigError(f"this model was calibrated before and its calibration changed its float weights (per-channel "
                          f"LayerNorm scales folded at {len(folded)} site(s), e.g. {folded[0]}); calibrate a fresh "
                          "quantize_(copy.deepcopy(float_model), config) instead")
    weights = [m for m in model.modules() if isinstance(m, WeightQuantizer)]
    for w in weights:
        w.enabled = quantized_weights
    for q in quantizers:
        q.start_observing()
    ok = False
    try:
        yield model
        ok = True
    finally:
        for q in quantizers:
            q.stop_observing(freeze=ok)
        for w in weights:
            w.enabled = True
    bad = [name for name, q in named if bool(q.calibrated) and not torch.isfinite(q.scale).all()]
    if bad:
        raise ConfigError(f"calibration gave {len(bad)} activation range(s) that are not finite (e.g. {bad[0]}): the "
                          "calibration images or the activations they produce hold NaN or Inf values")


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
    quantized_weights: bool | None = None,
) -> nn.Module:
    """Run the calibration images through the model once and freeze every range; then fold the
    per-channel post-LayerNorm scales the site set asks to fold (``psaq.quant.fold``)."""
    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images.flatten(1))).any(dim=1).sum())
        raise ConfigError(f"{bad} of {images.shape[0]} calibration images hold NaN or Inf values; the ranges they "
                          "gave would make every output meaningless")
    model.eval().to(device)
    with torch.no_grad(), calibration(model, quantized_weights):
        for i in range(0, images.shape[0], batch_size):
            cancel.check()
            model(images[i : i + batch_size].to(device))
    if folding_pending(model):
        fold_norm_scales(model)
    return model
