"""KDE entropy against scipy's gaussian_kde and numerical integration."""

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.stats import gaussian_kde

from psaq.synth import kde
from psaq.synth.kde import fused_kde_entropy, kde_density, kde_entropy


def scipy_entropy(x: np.ndarray, bandwidth: float, points: int, eps: float) -> float:
    # scipy's bandwidth is a factor of the sample std (ddof=1): choose it to give `bandwidth`
    kde = gaussian_kde(x, bw_method=bandwidth / np.std(x, ddof=1))
    grid = np.linspace(x.min(), x.max(), points)
    p = kde(grid) + eps
    return float(-trapezoid(p * np.log(p), grid))


@pytest.mark.parametrize("entropy", [kde_entropy, fused_kde_entropy])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bandwidth,points", [(0.01, 10), (0.05, 10), (0.02, 50)])
def test_entropy_matches_scipy(seed, bandwidth, points, entropy):
    rng = np.random.default_rng(seed)
    rows = [rng.normal(0.2, 0.1, 300), rng.uniform(-0.5, 0.9, 300), rng.beta(2, 5, 300)]
    got = entropy(torch.tensor(np.stack(rows)), bandwidth, points, 1e-4).numpy()
    want = [scipy_entropy(r, bandwidth, points, 1e-4) for r in rows]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_density_matches_scipy_pointwise():
    x = np.random.default_rng(3).normal(size=500)
    pts = np.linspace(-2, 2, 7)
    got = kde_density(torch.tensor(x)[None], torch.tensor(pts)[None], 0.3).numpy()[0]
    want = gaussian_kde(x, bw_method=0.3 / np.std(x, ddof=1))(pts)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_spread_samples_have_higher_entropy():
    g = torch.Generator().manual_seed(0)
    narrow = 0.5 + 0.01 * torch.randn(1, 400, generator=g, dtype=torch.float64)
    wide = torch.rand(1, 400, generator=g, dtype=torch.float64) * 2 - 1
    assert kde_entropy(wide) > kde_entropy(narrow)


def test_entropy_is_differentiable_and_grid_is_constant():
    x = torch.rand(2, 50, dtype=torch.float64, requires_grad=True)
    kde_entropy(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def broadcast_density(samples, points, bandwidth, weights=None):
    """The formula written out over the whole (R, P, M) kernel tensor, as the official code does."""
    z = (points.unsqueeze(-1) - samples.unsqueeze(-2)) / bandwidth
    k = torch.exp(-0.5 * z.square()) / (bandwidth * np.sqrt(2 * np.pi))
    if weights is None:
        return k.mean(dim=-1)
    return (k * weights).sum(dim=-1) / weights.sum()


@pytest.mark.parametrize("keep", [1 << 22, 0])  # kernels kept for backward; recomputed there
@pytest.mark.parametrize("chunk", [1 << 20, 1 << 12])  # whole rows; parts of rows
@pytest.mark.parametrize("weighted", [False, True])
def test_chunked_density_and_its_gradient_equal_the_broadcast_formula(weighted, chunk, keep, monkeypatch):
    """Many chunks (80,000 samples per row): value and both gradients, float64."""
    monkeypatch.setattr(kde, "_CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(kde, "_KEEP_ELEMENTS", keep)
    g = torch.Generator().manual_seed(0)
    samples = (torch.rand(3, 80_000, generator=g, dtype=torch.float64) * 1.4 - 0.4).requires_grad_(True)
    points = torch.linspace(-0.4, 1.0, 10, dtype=torch.float64).repeat(3, 1).requires_grad_(True)
    weights = torch.randint(1, 3, (80_000,), generator=g).double() if weighted else None
    grad_out = torch.randn(3, 10, generator=g, dtype=torch.float64)
    got = kde_density(samples, points, 0.01, weights)
    got_grads = torch.autograd.grad(got, (samples, points), grad_out)
    want = broadcast_density(samples, points, 0.01, weights)
    want_grads = torch.autograd.grad(want, (samples, points), grad_out)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * b.abs().max().item())


def test_density_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    samples = torch.rand(2, 30, generator=g, dtype=torch.float64).requires_grad_(True)
    points = torch.rand(2, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    weights = torch.randint(1, 3, (30,), generator=g).double()
    assert torch.autograd.gradcheck(lambda s, p: kde_density(s, p, 0.05, weights), (samples, points))


@pytest.mark.parametrize("chunk", [1 << 20, 1 << 12])  # whole rows in one pass; rows over several chunks
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_entropy_and_its_gradient_equal_the_composed_formula(weighted, chunk, monkeypatch):
    """The gradient computed during the forward pass, scaled in backward by a different incoming
    gradient for each row, against autograd through the composed formula (float64)."""
    monkeypatch.setattr(kde, "_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(4)
    samples = torch.rand(4, 3_000, generator=g, dtype=torch.float64) * 1.4 - 0.4
    weights = torch.randint(1, 3, (3_000,), generator=g).double() if weighted else None
    lo, hi = torch.full((4, 1), -0.45, dtype=torch.float64), torch.full((4, 1), 1.05, dtype=torch.float64)
    grad_out = torch.randn(4, generator=g, dtype=torch.float64)
    values, grads = [], []
    for entropy in (kde_entropy, fused_kde_entropy):
        x = samples.clone().requires_grad_(True)
        value = entropy(x, 0.01, 10, 1e-4, lo, hi, weights)
        values.append(value)
        grads.append(torch.autograd.grad(value, x, grad_out)[0])
    torch.testing.assert_close(values[1], values[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12 * grads[0].abs().max().item())
    with torch.no_grad():  # no gradient wanted: the same value, none computed
        torch.testing.assert_close(fused_kde_entropy(samples, 0.01, 10, 1e-4, lo, hi, weights), values[0], rtol=1e-12, atol=0)


def test_fused_entropy_passes_gradcheck():
    g = torch.Generator().manual_seed(5)
    samples = torch.rand(3, 40, generator=g, dtype=torch.float64).requires_grad_(True)
    weights = torch.randint(1, 3, (40,), generator=g).double()
    lo, hi = torch.zeros(3, 1, dtype=torch.float64), torch.ones(3, 1, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: fused_kde_entropy(s, 0.05, 7, 1e-4, lo, hi, weights), (samples,))


@pytest.mark.parametrize("entropy", [kde_entropy, fused_kde_entropy])
def test_far_tails_floored_below_float32_resolution(entropy):
    """Samples tens of bandwidths from every grid point (exponents far below float32's range):
    the floored float32 entropy and gradient equal the float64 formula to float32 rounding."""
    g = torch.Generator().manual_seed(2)
    clusters = torch.tensor([0.0, 0.5, 1.0]).repeat_interleave(200)
    samples = (clusters + 0.003 * torch.randn(600, generator=g)).repeat(2, 1)
    x32 = samples.clone().requires_grad_(True)
    x64 = samples.double().requires_grad_(True)
    e32, e64 = entropy(x32, num_points=25), entropy(x64, num_points=25)
    (g32,), (g64,) = torch.autograd.grad(e32.sum(), x32), torch.autograd.grad(e64.sum(), x64)
    torch.testing.assert_close(e32.double(), e64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g32.double(), g64, rtol=0, atol=1e-4 * g64.abs().max().item())
