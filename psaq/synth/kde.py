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


def _exp_floor(dtype: torch.dtype, bandwidth: float) -> float:
    """A floor for the kernel's exponents, a little above the log of the dtype's smallest normal
    number. exp() takes a slow path on exponents below about that log (12-22 ns per element
    instead of 0.8 here, measured, and 8x slower right at it); raised to the floor, such a term
    becomes a tiny normal number instead of something smaller, invisible in a sum whose eps alone
    is 1e-4. The margin keeps the backward's products with the differences normal as well: the
    floor applies only where |x − s| > h·sqrt(−2·floor) (about 13h), so a floor e·tiny/(13h)
    above tiny keeps |x − s|·kernel at least e·tiny; a denormal product costs about 20x a normal
    one on x86 (0.52 against 0.027 ms for digits-vit's 261,000 products, measured). Narrower
    dtypes get float32's floor (their own tiny, 6e-5 in float16, would not be invisible)."""
    lowest = math.log(torch.finfo(torch.promote_types(dtype, torch.float32)).tiny)
    return lowest + 1.0 + max(0.0, -math.log(bandwidth * math.sqrt(-2 * lowest)))


def _chunks(samples: torch.Tensor, points: torch.Tensor):
    """Chunks of rows [r, s) and columns [a, b) of at most ``_CHUNK_ELEMENTS`` kernel values."""
    rows, num_points = points.shape
    per_row = num_points * samples.shape[-1]
    width = samples.shape[-1] if per_row <= _CHUNK_ELEMENTS else max(64, _CHUNK_ELEMENTS // num_points)
    height = max(1, _CHUNK_ELEMENTS // (num_points * width))
    for r in range(0, rows, height):
        for a in range(0, samples.shape[-1], width):
            yield r, min(rows, r + height), a, min(samples.shape[-1], a + width)


def _differences(samples: torch.Tensor, points: torch.Tensor, r: int, s: int, a: int, b: int,
                 buffer: torch.Tensor | None = None) -> torch.Tensor:
    """x_p − s_m for a chunk, (s − r, P, b − a), written into ``buffer`` when given: one buffer
    for all chunks of a call, because a fresh multi-MB tensor per chunk costs its page faults
    (on a 28-px Swin the backward went from 1.35 to 0.95 ms a call with it, profiled)."""
    shape = (s - r, points.shape[1], b - a)
    out = None if buffer is None else buffer[: shape[0] * shape[1] * shape[2]].view(shape)
    return torch.sub(points[r:s, :, None], samples[r:s, None, a:b], out=out)


def _chunk_buffer(samples: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    largest = max((s - r) * (b - a) for r, s, a, b in _chunks(samples, points))
    return samples.new_empty(largest * points.shape[1])


def _kernel_from_square_(squared: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """exp(−d²/(2h²)) in place of d², written as the official code writes it."""
    return squared.div_(-2 * bandwidth**2).clamp_(min=_exp_floor(squared.dtype, bandwidth)).exp_()


def _kernel_(d: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """exp(−d²/(2h²)) in place of the differences d."""
    return _kernel_from_square_(d.mul_(d), bandwidth)


# Kernel values of a call at most this many are kept from forward for backward, which then
# computes no exp() (the costly part): small models (a 28-px Swin's windows: 3.8 M) gain, and a
# DeiT block set at 224 px (74 M, 296 MB) is recomputed chunk by chunk as before.
_KEEP_ELEMENTS = 1 << 22


class _GaussianKde(torch.autograd.Function):
    """Σ_m w_m exp(−(x_p − s_m)²/(2h²)) for each row, and its gradient, a chunk of samples at a
    time: the same sums as the broadcast formula, without keeping the (R, P, M) kernel tensor
    (except where it is small, ``_KEEP_ELEMENTS``)."""

    @staticmethod
    def forward(ctx, samples: torch.Tensor, points: torch.Tensor, bandwidth: float,
                weights: torch.Tensor | None) -> torch.Tensor:
        total = samples.new_zeros(points.shape)
        keep = any(ctx.needs_input_grad[:2]) and points.numel() * samples.shape[-1] <= _KEEP_ELEMENTS
        kept = []
        buffer = None if keep else _chunk_buffer(samples, points)
        for r, s, a, b in _chunks(samples, points):
            kernel = _kernel_(_differences(samples, points, r, s, a, b, buffer), bandwidth)
            total[r:s] += kernel.sum(dim=-1) if weights is None else kernel @ weights[a:b]
            if keep:
                kept.append(kernel)
        ctx.save_for_backward(samples, points, weights)
        ctx.bandwidth, ctx.kept = bandwidth, kept if keep else None
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        samples, points, weights = ctx.saved_tensors
        h, kept = ctx.bandwidth, ctx.kept
        ctx.kept = None
        want_samples, want_points = ctx.needs_input_grad[:2]
        grad_samples = torch.empty_like(samples) if want_samples else None
        grad_points = torch.zeros_like(points) if want_points else None
        # d/ds exp(−(x − s)²/(2h²)) = exp(·)·(x − s)/h²; d/dx is its negative. With D = (x − s)·exp(·)
        # for a chunk (rows, P, M): grad_s = w ⊙ (gᵀ D), grad_x = −g ⊙ (D w): one elementwise pass over
        # D and two batched matrix-vector products (scaling D by g and w first took two more passes).
        g = (grad / h**2).unsqueeze(1)  # (rows, 1, P)
        buffer = _chunk_buffer(samples, points)
        spare = None if kept is not None else torch.empty_like(buffer)
        for k, (r, s, a, b) in enumerate(_chunks(samples, points)):
            d = _differences(samples, points, r, s, a, b, buffer)
            kernel = kept[k] if kept is not None else _kernel_(spare[: d.numel()].view(d.shape).copy_(d), h)
            weighted = d.mul_(kernel)  # (rows, P, chunk)
            if want_samples:
                part = torch.bmm(g[r:s], weighted).squeeze(1)
                grad_samples[r:s, a:b] = part if weights is None else part.mul_(weights[a:b])
            if want_points:
                along = weighted.sum(dim=-1) if weights is None else weighted @ weights[a:b]
                grad_points[r:s] -= along.mul_(g[r:s].squeeze(1))
        return grad_samples, grad_points, None, None


def entropy_of_rows(samples: torch.Tensor, points: torch.Tensor, weights: torch.Tensor | None,
                    bandwidth: float, eps: float, want_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each row's KDE entropy on its grid ``points`` (R, P), constants, by the trapezoid rule,
    and, if ``want_grad``, dH_r/ds_r (R, M): computed while each chunk's kernel values are still
    in cache.

    A row's entropy depends on that row's samples only, so its gradient is known as soon as the
    row's kernel sums are: with G = dH/d(sum) at the grid points,
    dH_r/ds_m = w_m·Σ_p G_p·(x_p − s_m)·exp(−(x_p − s_m)²/(2h²))/h². Where a row's kernel values
    fit one chunk this is one pass over them instead of a forward pass and a backward pass that
    recomputes them (8 elementwise operations on each kernel value instead of 14); a row wider
    than a chunk takes a second pass over its chunks once its sums are complete."""
    count = samples.shape[-1] if weights is None else weights.sum()
    norm = count * bandwidth * math.sqrt(2 * math.pi)
    dx = points[:, 1:] - points[:, :-1]
    totals = samples.new_zeros(points.shape)
    grad = coef = spare = None
    if want_grad:
        grad = torch.empty_like(samples)
        # dH/dp at each grid point is −(log p + 1) times its trapezoid weight (half of the
        # interval on each side); p = sum/norm + eps, and the kernel's derivative brings 1/h²
        trapezoid = samples.new_zeros(points.shape)
        trapezoid[:, 1:] += 0.5 * dx
        trapezoid[:, :-1] += 0.5 * dx
        coef = trapezoid.div_(-norm * bandwidth**2)
    buffer = _chunk_buffer(samples, points)
    by_rows: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for r, s, a, b in _chunks(samples, points):
        by_rows.setdefault((r, s), []).append((a, b))
    whole = all(len(columns) == 1 for columns in by_rows.values())  # kernel values stay in the buffers
    if want_grad:
        spare = torch.empty_like(buffer)

    # The exponent −d²/(2h²) in one pass, as d·d·(−1/(2h²)): within one rounding of the official
    # code's division (float32: 42 % of the exponents differ in their last bit, none by more), at
    # 60 % of the time of a product and a division (measured on a Swin's chunk).
    zero, scale, floor = samples.new_zeros(()), -1.0 / (2 * bandwidth**2), _exp_floor(samples.dtype, bandwidth)

    def kernel_of(d: torch.Tensor) -> torch.Tensor:
        out = spare[: d.numel()].view(d.shape) if want_grad else d  # d stays for the gradient
        return torch.addcmul(zero, d, d, value=scale, out=out).clamp_(min=floor).exp_()

    for (r, s), columns in by_rows.items():
        for a, b in columns:
            d = _differences(samples, points, r, s, a, b, buffer)
            kernel = kernel_of(d)
            totals[r:s] += kernel.sum(dim=-1) if weights is None else kernel @ weights[a:b]
        if not want_grad:
            continue
        g = torch.addcmul(coef[r:s], (totals[r:s] / norm + eps).log_(), coef[r:s]).unsqueeze(1)
        for a, b in columns:
            if not whole:
                d = _differences(samples, points, r, s, a, b, buffer)
                kernel = kernel_of(d)
            if whole:  # straight into the gradient's rows
                part = torch.bmm(g, d.mul_(kernel), out=grad[r:s].unsqueeze(1)).squeeze(1)
            else:
                part = grad[r:s, a:b].copy_(torch.bmm(g, d.mul_(kernel)).squeeze(1))
            if weights is not None:
                part.mul_(weights[a:b])
    p = totals / norm + eps
    integrand = -p * torch.log(p)
    return ((integrand[:, 1:] + integrand[:, :-1]) * 0.5 * dx).sum(dim=-1), grad


class _KdeEntropyOfRows(torch.autograd.Function):
    """``entropy_of_rows`` with autograd: backward only scales the gradient computed in forward
    by the incoming gradient of each row."""

    @staticmethod
    def forward(ctx, samples: torch.Tensor, points: torch.Tensor, weights: torch.Tensor | None,
                bandwidth: float, eps: float) -> torch.Tensor:
        entropy, grad = entropy_of_rows(samples, points, weights, bandwidth, eps, ctx.needs_input_grad[0])
        ctx.save_for_backward(grad)
        return entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out.unsqueeze(1), None, None, None, None


def kde_density(samples: torch.Tensor, points: torch.Tensor, bandwidth: float = BANDWIDTH,
                weights: torch.Tensor | None = None) -> torch.Tensor:
    """Gaussian KDE of each row of ``samples`` (R, M) evaluated at ``points`` (R, P) → (R, P).
    ``weights`` (M,) counts each column that many times (a value that occurs twice, stored once)."""
    kernel_sum = _GaussianKde.apply(samples, points, bandwidth, weights)
    count = samples.shape[-1] if weights is None else weights.sum()
    return kernel_sum / (count * bandwidth * math.sqrt(2 * math.pi))


def grid_points(samples: torch.Tensor, num_points: int, lo: torch.Tensor | None, hi: torch.Tensor | None) -> torch.Tensor:
    """``num_points`` evenly spaced from ``lo`` to ``hi`` (R, 1) for each row, constants
    (detached); by default each row's own min and max."""
    if lo is None:
        lo = samples.detach().amin(dim=-1, keepdim=True)
    if hi is None:
        hi = samples.detach().amax(dim=-1, keepdim=True)
    steps = torch.linspace(0.0, 1.0, num_points, device=samples.device, dtype=samples.dtype)
    return lo.detach() + (hi.detach() - lo.detach()) * steps


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
    points = grid_points(samples, num_points, lo, hi)
    p = kde_density(samples, points, bandwidth, weights) + eps
    integrand = -p * torch.log(p)
    dx = points[:, 1:] - points[:, :-1]
    return ((integrand[:, 1:] + integrand[:, :-1]) * 0.5 * dx).sum(dim=-1)


def fused_kde_entropy(
    samples: torch.Tensor,
    bandwidth: float = BANDWIDTH,
    num_points: int = GRID_POINTS,
    eps: float = DENSITY_EPS,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``kde_entropy``, value and gradient, in one pass over the kernel values where a row fits
    a chunk (see ``_KdeEntropyOfRows``). The default in synthesis; ``kde_entropy`` is the
    composed formula that ``torch.compile`` fuses."""
    points = grid_points(samples, num_points, lo, hi)
    return _KdeEntropyOfRows.apply(samples, points, weights, bandwidth, eps)
