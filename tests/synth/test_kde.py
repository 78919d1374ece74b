"""KDE entropy against scipy's gaussian_kde and numerical integration."""

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid
from scipy.stats import gaussian_kde

from psaq.synth.kde import kde_density, kde_entropy


def scipy_entropy(x: np.ndarray, bandwidth: float, points: int, eps: float) -> float:
    # scipy's bandwidth is a factor of the sample std (ddof=1): choose it to give `bandwidth`
    kde = gaussian_kde(x, bw_method=bandwidth / np.std(x, ddof=1))
    grid = np.linspace(x.min(), x.max(), points)
    p = kde(grid) + eps
    return float(-trapezoid(p * np.log(p), grid))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bandwidth,points", [(0.01, 10), (0.05, 10), (0.02, 50)])
def test_entropy_matches_scipy(seed, bandwidth, points):
    rng = np.random.default_rng(seed)
    rows = [rng.normal(0.2, 0.1, 300), rng.uniform(-0.5, 0.9, 300), rng.beta(2, 5, 300)]
    got = kde_entropy(torch.tensor(np.stack(rows)), bandwidth, points, 1e-4).numpy()
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
