"""Differential entropy of a Gaussian kernel density estimate, batched and differentiable."""

from __future__ import annotations

import math

import torch

BANDWIDTH = 0.01  # the paper's fixed kernel width, in cosine-similarity units
GRID_POINTS = 10  # density evaluated on this many evenly spaced points between min and max
DENSITY_EPS = 1e-4  # added to the density before the log


def kde_density(samples: torch.Tensor, points: torch.Tensor, bandwidth: float = BANDWIDTH) -> torch.Tensor:
    """Gaussian KDE of each row of ``samples`` (R, M) evaluated at ``points`` (R, P) → (R, P)."""
    z = (points.unsqueeze(-1) - samples.unsqueeze(-2)) / bandwidth
    return torch.exp(-0.5 * z.square()).mean(dim=-1) / (bandwidth * math.sqrt(2 * math.pi))


def kde_entropy(
    samples: torch.Tensor,
    bandwidth: float = BANDWIDTH,
    num_points: int = GRID_POINTS,
    eps: float = DENSITY_EPS,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
) -> torch.Tensor:
    """Entropy −∫ p log p of each row's KDE, by the trapezoid rule on ``num_points`` evenly
    spaced between ``lo`` and ``hi``, with ``eps`` added to p. (R, M) → (R,).

    ``lo``/``hi`` (R, 1) give each row its grid ends; by default each row's own min and max.
    The grid ends are constants (detached): the gradient moves the samples, not the grid.
    """
    if lo is None:
        lo = samples.detach().amin(dim=-1, keepdim=True)
    if hi is None:
        hi = samples.detach().amax(dim=-1, keepdim=True)
    steps = torch.linspace(0.0, 1.0, num_points, device=samples.device, dtype=samples.dtype)
    points = lo.detach() + (hi.detach() - lo.detach()) * steps
    p = kde_density(samples, points, bandwidth) + eps
    integrand = -p * torch.log(p)
    dx = points[:, 1:] - points[:, :-1]
    return ((integrand[:, 1:] + integrand[:, :-1]) * 0.5 * dx).sum(dim=-1)
