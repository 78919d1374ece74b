"""Quantizer math against a float64 reference of integer quantization."""

import numpy as np
import pytest
import torch

from psaq.quant.primitives import (
    asymmetric_qparams,
    dequantize,
    fake_quantize,
    int_range,
    quantize,
    symmetric_qparams,
)

BITS = range(2, 9)


def reference_quantize(x: np.ndarray, lo: float, hi: float, bits: int, symmetric: bool) -> np.ndarray:
    """Integer quantization written out in float64 from DESIGN §1, independent of the torch code."""
    if symmetric:
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        scale = max(abs(lo), abs(hi)) / ((qmax - qmin) / 2)
        zp = 0.0
    else:
        qmin, qmax = 0, 2**bits - 1
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (hi - lo) / (qmax - qmin)
        zp = min(max(qmin - np.round(lo / scale), qmin), qmax)
    q = np.clip(np.round(x / scale) + zp, qmin, qmax)
    assert np.all(q == np.round(q))
    return (q - zp) * scale


@pytest.mark.parametrize("bits", BITS)
def test_int_range(bits):
    assert int_range(bits, signed=True) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert int_range(bits, signed=False) == (0, 2**bits - 1)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quantize_matches_float64_reference(bits, symmetric):
    rng = np.random.default_rng(bits)
    x = rng.normal(0.3, 2.0, size=4096)
    lo, hi = float(x.min()), float(x.max())
    ref = reference_quantize(x, lo, hi, bits, symmetric)

    xt = torch.tensor(x, dtype=torch.float64)
    rule = symmetric_qparams if symmetric else asymmetric_qparams
    scale, zp = rule(torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64), bits)
    qmin, qmax = int_range(bits, signed=symmetric)
    got = fake_quantize(xt, scale, zp, qmin, qmax).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    # a grid of 2^bits levels at most
    assert len(np.unique(np.round(got / scale.item()))) <= 2**bits


@pytest.mark.parametrize("bits", BITS)
def test_quantize_stays_on_grid_and_error_is_bounded(bits):
    x = torch.linspace(-3, 5, 1001, dtype=torch.float64)
    scale, zp = asymmetric_qparams(x.min().reshape(1), x.max().reshape(1), bits)
    q = quantize(x, scale, zp, *int_range(bits, signed=False))
    assert q.min() >= 0 and q.max() <= 2**bits - 1
    assert torch.equal(q, q.round())
    # inside the range the rounding error is at most half a step
    err = (dequantize(q, scale, zp) - x).abs().max().item()
    assert err <= scale.item() / 2 + 1e-12


def test_symmetric_per_channel_broadcast():
    w = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    scale, zp = symmetric_qparams(w.amin(1), w.amax(1), 8)
    torch.testing.assert_close(scale, torch.tensor([2.0 / 127.5, 0.5 / 127.5]))
    assert torch.all(zp == 0)


def test_constant_tensor_does_not_divide_by_zero():
    x = torch.zeros(10)
    scale, zp = asymmetric_qparams(x.min().reshape(1), x.max().reshape(1), 8)
    assert torch.isfinite(fake_quantize(x, scale, zp, 0, 255)).all()


@pytest.mark.parametrize("per_channel", [False, True])
def test_in_place_fake_quantize_equals_the_composed_formula_bit_for_bit(per_channel):
    """Without autograd, fake_quantize runs in place; with it, as quantize then dequantize. Same
    bits either way, rounding ties included (x on half steps)."""
    g = torch.Generator().manual_seed(0)
    scale = torch.rand(8, generator=g) * 0.1 + 0.01 if per_channel else torch.tensor([0.05])
    zp = torch.randint(0, 256, scale.shape, generator=g).float()
    x = torch.randn(16, 8, generator=g) * 3
    x[:4] = (torch.randint(-300, 300, (4, 8), generator=g) + 0.5) * scale  # ties
    want = dequantize(quantize(x, scale, zp, 0, 255), scale, zp)
    with torch.no_grad():
        got = fake_quantize(x, scale, zp, 0, 255)
    assert torch.equal(got, want)
    tracked = x.clone().requires_grad_(True)
    assert torch.equal(fake_quantize(tracked, scale, zp, 0, 255).detach(), want)
