"""Block reconstruction: AdaRound's rounding, LSQ step sizes, the result still on the integer grid."""

import copy

import pytest
import torch

from psaq.errors import ConfigError
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.layers import QuantLinear
from psaq.quant.quantizers import ActQuantizer
from psaq.quant.reconstruct import GAMMA, ZETA, ReconstructConfig, _AdaRound, reconstruct
from tests.tiny import tiny_swin, tiny_vit


def test_adaround_starts_at_the_float_weight_and_ends_on_the_grid():
    torch.manual_seed(0)
    layer = QuantLinear(torch.nn.Linear(8, 4), QuantConfig(w_bits=4), None)
    r = _AdaRound(layer)
    w = layer.weight.detach().clone()
    # h(V) = the fractional part of W/s (clamped to [0.01, 0.99]), so the soft weight starts near W
    # (within the grid: the official scale puts the largest weight half a step above it)
    s = layer.weight_quantizer.scale
    inside = torch.clamp(w, -8 * s, 7 * s)
    assert (r.soft(w) - inside).abs().max() <= 0.011 * s.max()
    expected_h = (w / s - torch.floor(w / s)).clamp(0.01, 0.99)
    torch.testing.assert_close(r.h(), expected_h, atol=1e-6, rtol=0)
    with torch.no_grad():
        r.v.fill_(10.0)  # h → 1 everywhere: every weight rounds up
    r.harden()
    q = layer.weight.detach() / s
    torch.testing.assert_close(q, q.round(), atol=1e-5, rtol=0)  # on the grid
    torch.testing.assert_close(q, torch.clamp(torch.floor(w / s) + 1, -8, 7), atol=1e-5, rtol=0)
    assert layer.weight_quantizer.soft_rounding is None
    # the rectified sigmoid: h(V) = clamp(σ(V)(ζ − γ) + γ, 0, 1)
    v = torch.tensor([-100.0, 0.0, 100.0])
    assert torch.allclose((torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1), torch.tensor([0.0, 0.5, 1.0]))


def test_regularizer_is_zero_at_hard_values_and_largest_at_one_half():
    layer = QuantLinear(torch.nn.Linear(4, 2), QuantConfig(w_bits=4), None)
    r = _AdaRound(layer)
    with torch.no_grad():
        r.v.fill_(100.0)
    assert r.regularizer(2.0).item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        r.v.fill_(0.0)  # h = 0.5
    assert r.regularizer(2.0).item() == pytest.approx(8.0)


@pytest.mark.parametrize("factory", [tiny_vit, tiny_swin])
def test_reconstruction_lowers_block_error_and_keeps_weights_on_the_grid(factory):
    torch.manual_seed(0)
    model = factory()
    images = torch.randn(16, 3, 32, 32)
    q = calibrate(quantize_(copy.deepcopy(model), QuantConfig(w_bits=4, a_bits=4, sites="repq")), images)
    history = reconstruct(q, model, images, ReconstructConfig(enabled=True, iters=60), progress=False)
    blocks = [k for k in history if k != "wall_s"]
    assert blocks and all(history[k][-1] < history[k][0] for k in blocks)
    from psaq.quant.reconstruct import _blocks

    for layer in (m for _, block in _blocks(q) for m in block.modules()):
        if isinstance(layer, QuantLinear):  # the blocks' layers: reconstructed, their weights on the grid
            wq = layer.weight_quantizer
            ratio = layer.weight.detach() / wq.scale
            torch.testing.assert_close(ratio, ratio.round(), atol=1e-4, rtol=0)
            assert wq.soft_rounding is None
    assert all(m.learned_scale is None and m.drop_prob == 0 for m in q.modules() if isinstance(m, ActQuantizer))
    assert torch.isfinite(q(images)).all()


def test_config_is_validated():
    for bad in (dict(iters=0), dict(lr_rounding=0.0), dict(drop_prob=1.0), dict(beta=(2.0, 20.0)), dict(enabled="yes")):
        with pytest.raises(ConfigError):
            ReconstructConfig(**bad)
