"""quantize_ on tiny timm ViT/DeiT/Swin, and the fake-quantized forward against integer math."""

import numpy as np
import pytest
import torch
from torch import nn

from psaq.errors import ConfigError, NotCalibratedError, UnknownNameError
from psaq.quant import QuantConfig, calibrate, calibration, quantize_, require_calibrated, uncalibrated
from psaq.quant.layers import QuantLinear
from psaq.quant.primitives import int_range
from psaq.quant.quantize import act_quantizers
from psaq.quant.sites import SitePlan
from psaq.families import family_of
from tests.tiny import tiny_model  # noqa: F401  (the fixture)


@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (4, 8), (6, 6), (3, 5)])
def test_quant_linear_equals_the_official_integer_pipeline(w_bits, a_bits):
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(16, 8)
    x = torch.randn(32, 16, generator=g) * 2 + 0.5
    cfg = QuantConfig(w_bits=w_bits, a_bits=a_bits)
    q = QuantLinear(lin, cfg, SitePlan.of(cfg, "linear.input"), inputs=["linear.input"])
    with calibration(q):
        q(x)
    got = q(x).detach().double().numpy()

    # quant_utils.py's formulas: activation qparams and weights in float32 as the official code
    # computes them, then integer operands, an exact integer accumulate, one rescale
    xf, wf = x.numpy(), lin.weight.detach().numpy()
    amin, amax = int_range(a_bits, signed=False)
    s_x = np.float32((xf.max() - xf.min()) / np.float32(amax - amin))
    z_x = np.clip(amin - np.round(xf.min() / s_x), amin, amax)
    x_int = np.clip(np.round(xf / s_x + np.float32(z_x)), amin, amax).astype(np.float64)
    wmin, wmax = int_range(w_bits, signed=True)
    s_w = (np.maximum(-wf.min(axis=1), wf.max(axis=1)) / np.float32((wmax - wmin) / 2)).astype(np.float32)
    w_int = np.clip(np.round(wf / s_w[:, None]), wmin, wmax).astype(np.float64)
    acc = (x_int - z_x) @ w_int.T  # exact in float64: small integers
    ref = acc * float(s_x) * s_w.astype(np.float64)[None, :] + lin.bias.detach().double().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_quantize_wraps_every_site(tiny_model, images):
    y_float = tiny_model(images)
    f_float = tiny_model.forward_features(images)
    quantize_(tiny_model, QuantConfig(w_bits=8, a_bits=8))
    linears = [m for m in tiny_model.modules() if isinstance(m, nn.Linear)]
    wrapped = [m for m in tiny_model.modules() if isinstance(m, QuantLinear)]
    assert len(linears) == len(wrapped) > 0
    family = family_of(tiny_model)
    attn = [m for m in tiny_model.modules() if isinstance(m, tuple(family.wrappers[t] for t in family.attention_types))]
    blocks = [m for m in tiny_model.modules() if isinstance(m, family.quantized_block_types)]
    assert len(attn) == len(blocks) >= 2
    # before calibration activations pass through; only weights are rounded
    y_weights_only = tiny_model(images)
    assert torch.allclose(y_weights_only, y_float, atol=0.05)
    assert uncalibrated(tiny_model)
    with pytest.raises(NotCalibratedError):
        require_calibrated(tiny_model)
    calibrate(tiny_model, images)
    assert uncalibrated(tiny_model) == []
    require_calibrated(tiny_model)
    y_q = tiny_model(images)
    assert torch.isfinite(y_q).all()
    assert not torch.equal(y_q, y_weights_only)  # activations are now quantized
    # random-weight models have tiny class tokens that LayerNorm magnifies, so the bound is loose;
    # a broken quantizer gives a relative error near 1
    f_q = tiny_model.forward_features(images)
    assert ((f_q - f_float).norm() / f_float.norm()).item() < 0.25


def test_lower_bits_give_larger_error(images):
    from tests.tiny import tiny_vit

    errors = []
    for bits in (8, 4, 2):
        torch.manual_seed(0)
        model = tiny_vit()
        ref = model.forward_features(images)
        calibrate(quantize_(model, QuantConfig(w_bits=bits, a_bits=bits)), images)
        errors.append((model.forward_features(images) - ref).pow(2).mean().item())
    assert errors[0] < errors[1] < errors[2]


def test_failed_calibration_freezes_nothing(images):
    from tests.tiny import tiny_vit

    model = quantize_(tiny_vit(), QuantConfig())
    with pytest.raises(RuntimeError, match="boom"):
        with calibration(model):
            model(images)
            raise RuntimeError("boom")
    assert all(not bool(q.calibrated) and not q.observing for _, q in act_quantizers(model))


def test_quantize_twice_is_refused():
    from tests.tiny import tiny_vit

    model = quantize_(tiny_vit(), QuantConfig())
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_(model, QuantConfig())


def test_calibration_of_float_model_is_refused():
    with pytest.raises(ConfigError, match="quantize_"):
        with calibration(nn.Sequential(nn.ReLU())):
            pass


@pytest.mark.parametrize("bad", [1, 9, 0, -3, 4.0, "8", True, None])
def test_bits_out_of_range_are_refused(bad):
    with pytest.raises(ConfigError, match="2 to 8"):
        QuantConfig(w_bits=bad)
    with pytest.raises(ConfigError, match="2 to 8"):
        QuantConfig(a_bits=bad)


def test_unknown_observer_is_refused():
    with pytest.raises(UnknownNameError, match="percentile"):
        QuantConfig(act_observer="percentil")


def test_filter_fn_skips_modules(images):
    from tests.tiny import tiny_vit

    model = quantize_(tiny_vit(), QuantConfig(), filter_fn=lambda m, name: name != "head")
    assert isinstance(model.head, nn.Linear)


def test_state_dict_carries_scales(images):
    from tests.tiny import tiny_vit

    model = calibrate(quantize_(tiny_vit(), QuantConfig()), images)
    state = model.state_dict()
    assert any(k.endswith("quantizers.attn_qkv.scale") for k in state)
    assert any(k.endswith("weight_quantizer.scale") for k in state)


def test_non_finite_calibration_images_are_refused():
    from tests.tiny import tiny_vit

    torch.manual_seed(0)
    model = quantize_(tiny_vit(), QuantConfig())
    images = torch.randn(8, 3, 32, 32)
    for bad in (float("nan"), float("inf")):
        broken = images.clone()
        broken[3, 0, 5, 5] = bad
        with pytest.raises(ConfigError, match="1 of 8 calibration images hold NaN or Inf"):
            calibrate(model, broken)
    with pytest.raises(ConfigError, match="not finite"):  # the context manager checks the ranges it froze
        with calibration(model):
            model(images.masked_fill(images > 2.5, float("nan")))


def test_a_second_calibration_refolds_nothing():
    """repq folds per-channel LayerNorm scales into the float weights when it calibrates: a second
    calibration would fold them twice, so it is refused; a model whose calibration changed no weight
    calibrates again on new images."""
    import copy

    from tests.tiny import tiny_vit

    torch.manual_seed(0)
    float_model = tiny_vit()
    images, other = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32) * 2
    repq = calibrate(quantize_(copy.deepcopy(float_model), QuantConfig(w_bits=4, a_bits=4, sites="repq")), images)
    with pytest.raises(ConfigError, match="calibrate a fresh"):
        calibrate(repq, other)
    official = calibrate(quantize_(copy.deepcopy(float_model), QuantConfig()), images)
    before = {n: q.scale.clone() for n, q in act_quantizers(official)}
    calibrate(official, other)
    assert any(not torch.equal(before[n], q.scale) for n, q in act_quantizers(official))
