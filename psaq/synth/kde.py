"""Differential entropy of a Gaussian kernel density estimate, batched and differentiable."""

from __future__ import annotations

import math

import torch

BANDWIDTH = 0.01  # the paper's fixed kernel width, in cosine-similarity units
GRID_POINTS = 10  # density evaluated on this many evenly spaced points between min and max
DENSITY_EPS = 1e-4  # added to the density before the log


# Kernel evaluations held at once (rows x points x samples): a few MB that stay in cache.
# Materialising all of them (rows x points x N² per block at 224 px) and keeping them for
# backward is what made the estimator cost twice the model's own step. A chunk spans whole rows
# where it can: fewer, longer operations (each eager op costs microseconds to launch).
_CHUNK_ELEMENTS = 1 << 20


def _exp_floor(dtype: torch.dtype) -> float:
    """A floor for the kernel's exponents, one above the log of the dtype's smallest normal number.
    exp() takes a slow path on exponents below about that log (12-22 ns per element instead of
    0.8 here, measured, and 8x slower right at it); raised to the floor, such a term becomes
    e·tiny (3.2e-38 in float32) instead of something smaller, invisible in a sum whose eps alone
    is 1e-4. Narrower dtypes get float32's floor (their own tiny, 6e-5 in float16, would not be
    invisible)."""
    return math.log(torch.finfo(torch.promote_types(dtype, torch.float32)).tiny) + 1.0


def _kernels(samples: torch.Tensor, points: torch.Tensor, bandwidth: float):
    """For each chunk of rows [r, s) and columns [a, b): z = (x_p − s_m)/h and exp(−½z²),
    (s − r, P, b − a) each. Scaled chunk by chunk: no (R, M) temporary."""
    rows, num_points = points.shape
    per_row = num_points * samples.shape[-1]
    width = samples.shape[-1] if per_row <= _CHUNK_ELEMENTS else max(64, _CHUNK_ELEMENTS // num_points)
    height = max(1, _CHUNK_ELEMENTS // (num_points * width))
    floor = _exp_floor(samples.dtype)
    x = points.unsqueeze(-1)
    for r in range(0, rows, height):
        s = min(rows, r + height)
        for a in range(0, samples.shape[-1], width):
            b = min(samples.shape[-1], a + width)
            z = torch.sub(x[r:s], samples[r:s, None, a:b]).div_(bandwidth)
            yield r, s, a, b, z, z.square().mul_(-0.5).clamp_(min=floor).exp_()


class _GaussianKde(torch.autograd.Function):
    """Σ_m w_m exp(−½((x_p − s_m)/h)²) for each row, and its gradient, a chunk of samples at a
    time: the same sums as the broadcast formula, without keeping the (R, P, M) kernel tensor."""

    @staticmethod
    def forward(ctx, samples: torch.Tensor, points: torch.Tensor, bandwidth: float,
                weights: torch.Tensor | None) -> torch.Tensor:
        total = samples.new_zeros(points.shape)
        for r, s, a, b, _, kernel in _kernels(samples, points, bandwidth):
            total[r:s] += kernel.sum(dim=-1) if weights is None else kernel @ weights[a:b]
        ctx.save_for_backward(samples, points, weights)
        ctx.bandwidth = bandwidth
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        samples, points, weights = ctx.saved_tensors
        h = ctx.bandwidth
        want_samples, want_points = ctx.needs_input_grad[:2]
        grad_samples = torch.empty_like(samples) if want_samples else None
        grad_points = torch.zeros_like(points) if want_points else None
        g = (grad / h).unsqueeze(-1)  # d/ds exp(−½z²) = exp(−½z²)·z/h with z = (x − s)/h; d/dx is its negative
        for r, s, a, b, z, kernel in _kernels(samples, points, h):
            weighted = kernel.mul_(z).mul_(g[r:s])  # (rows, P, chunk)
            if weights is not None:
                weighted.mul_(weights[a:b])
            if want_samples:
                torch.sum(weighted, dim=1, out=grad_samples[r:s, a:b])
            if want_points:
                grad_points[r:s] -= weighted.sum(dim=-1)
        return grad_samples, grad_points, None, None


def kde_density(samples: torch.Tensor, points: torch.Tensor, bandwidth: float = BANDWIDTH,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian KDE of each row of ``samples`` (R, M) evaluated at ``points`` (R, P) → (R, P).
    ``weights`` (M,) counts each column that many times (a value that occurs twice, stored once)."""
    kernel_sum = _GaussianKde.apply(samples, points, bandwidth, weights)
    count = samples.shape[-1] if weights is None else weights.sum()
    return kernel_sum / (count * bandwidth * math.sqrt(2 * math.pi))


def kde_entropy(
    samples: torch.Tensor,
    bandwidth: float = BANDWIDTH,
    num_points: int = GRID_POINTS,
    eps: float = DENSITY_EPS,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Entropy −∫ p log p of each row's KDE, by the trapezoid rule on ``num_points`` evenly
    spaced between ``lo`` and ``hi``, with ``eps`` added to p. (R, M) → (R,).

    ``lo``/``hi`` (R, 1) give each row its grid ends; by default each row's own min and max.
    The grid ends are constants (detached): the gradient moves the samples, not the grid.
    ``weights`` (M,): see ``kde_density``.
    """
    if lo is None:
        lo = samples.detach().amin(dim=-1, keepdim=True)
    if hi is None:
        hi = samples.detach().amax(dim=-1, keepdim=True)
    steps = torch.linspace(0.0, 1.0, num_points, device=samples.device, dtype=samples.dtype)
    points = lo.detach() + (hi.detach() - lo.detach()) * steps
    p = kde_density(samples, points, bandwidth, weights) + eps
    integrand = -p * torch.log(p)
    dx = points[:, 1:] - points[:, :-1]
    return ((integrand[:, 1:] + integrand[:, :-1]) * 0.5 * dx).sum(dim=-1)
