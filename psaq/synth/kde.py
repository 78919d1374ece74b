"""Differential entropy of a Gaussian kernel density estimate, batched and differentiable."""

from __future__ import annotations

import math

import torch

from psaq.synth import workspace

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
    return workspace.take(samples, largest * points.shape[1])


def _kernel_(d: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """exp(−d²/(2h²)) in place of the differences d, written as the official code writes it."""
    return d.square_().div_(-2 * bandwidth**2).clamp_(min=_exp_floor(d.dtype)).exp_()


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
        count = points.numel() * samples.shape[-1]
        keep = any(ctx.needs_input_grad[:2]) and count <= _KEEP_ELEMENTS
        # kept: every chunk's kernels side by side in one reused buffer, held until backward
        # (torch.compile traces this function and refuses kept views of a buffer: fresh tensors there)
        pooled = not torch.compiler.is_compiling()
        buffer = _chunk_buffer(samples, points) if not keep else workspace.take(samples, count) if pooled else None
        kept, start = [], 0
        for r, s, a, b in _chunks(samples, points):
            place = buffer if not keep else buffer[start:] if pooled else None
            kernel = _kernel_(_differences(samples, points, r, s, a, b, place), bandwidth)
            total[r:s] += kernel.sum(dim=-1) if weights is None else kernel @ weights[a:b]
            if keep:
                kept.append(kernel)
                start += kernel.numel()
        ctx.save_for_backward(samples, points, weights)
        ctx.bandwidth, ctx.kept = bandwidth, (buffer, kept) if keep else None
        if not keep:
            workspace.give(buffer)
        return total

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        samples, points, weights = ctx.saved_tensors
        h = ctx.bandwidth
        held, kept = ctx.kept if ctx.kept is not None else (None, None)
        ctx.kept = None
        want_samples, want_points = ctx.needs_input_grad[:2]
        grad_samples = torch.empty_like(samples) if want_samples else None
        grad_points = torch.zeros_like(points) if want_points else None
        # d/ds exp(−(x − s)²/(2h²)) = exp(·)·(x − s)/h²; d/dx is its negative
        g = (grad / h**2).unsqueeze(-1)
        buffer = _chunk_buffer(samples, points)
        spare = None if kept is not None else workspace.take(buffer, buffer.numel())
        for k, (r, s, a, b) in enumerate(_chunks(samples, points)):
            d = _differences(samples, points, r, s, a, b, buffer)
            kernel = kept[k] if kept is not None else _kernel_(spare[: d.numel()].view(d.shape).copy_(d), h)
            weighted = d.mul_(kernel).mul_(g[r:s])  # (rows, P, chunk)
            if weights is not None:
                weighted.mul_(weights[a:b])
            if want_samples:
                torch.sum(weighted, dim=1, out=grad_samples[r:s, a:b])
            if want_points:
                grad_points[r:s] -= weighted.sum(dim=-1)
        workspace.give(buffer, spare, held)
        return grad_samples, grad_points, None, None


def _reach(bandwidth: float, dtype: torch.dtype) -> float:
    """The distance beyond which a kernel value is the floor (``_exp_floor``): e·tiny, nothing."""
    return bandwidth * math.sqrt(-2 * _exp_floor(dtype))


def _band_width(points: torch.Tensor, bandwidth: float, dtype: torch.dtype) -> int | None:
    """How many grid points at most lie within reach of one sample, on evenly spaced ``points``;
    None where the band would save nothing (a grid narrow against the kernel, or one point)."""
    if points.shape[1] < 2:
        return None
    spacing = float((points[:, -1] - points[:, 0]).amin()) / (points.shape[1] - 1)
    if not spacing > 0:
        return None
    width = int(2 * _reach(bandwidth, dtype) / spacing) + 1
    # a band offset costs about 1.5 grid points of the dense path (a gather and a scatter more), measured
    return width if 3 * width <= 2 * points.shape[1] else None


class _BandedKde(torch.autograd.Function):
    """The sums of ``_GaussianKde`` on an evenly spaced grid, each sample evaluated only at the
    ``width`` grid points that can lie within reach of it: every other kernel value is the floor
    (e·tiny, 3e-38 in float32), which adds nothing to a sum that ``eps`` alone puts at 1e-4. The
    kernel values it does evaluate are the dense path's, to the bit. On a trained model the
    similarities span most of [−1, 1], so a sample reaches 1 or 2 of the 10 points (measured on
    fashion-vit during synthesis: 1.3–1.9).

    The grid is padded with ``width`` copies of each end point so that no index needs a mask:
    what lands on the padding is dropped in forward and meets a zero gradient in backward."""

    @staticmethod
    def forward(ctx, samples: torch.Tensor, points: torch.Tensor, bandwidth: float,
                weights: torch.Tensor | None, width: int) -> torch.Tensor:
        rows, num_points = points.shape
        lo = points[:, :1]
        spacing = (points[:, -1:] - lo) / (num_points - 1)
        padded = torch.cat([lo.expand(rows, width), points, points[:, -1:].expand(rows, width)], dim=1)
        # the first grid point at or after s − reach, as an index into the padded grid
        first = (samples - _reach(bandwidth, samples.dtype)).sub_(lo).div_(spacing).ceil_()
        first = first.clamp_(-width, num_points).add_(width).to(torch.int64)
        totals = samples.new_zeros((rows, num_points + 2 * width))
        kept = []
        for j in range(width):
            index = first + j if j else first
            d = padded.gather(1, index).sub_(samples)  # x − s
            kernel = _kernel_(d.clone(), bandwidth)
            totals.scatter_add_(1, index, kernel if weights is None else kernel * weights)
            kept.append((d, kernel))
        ctx.save_for_backward(weights)
        ctx.bandwidth, ctx.first, ctx.kept = bandwidth, first, kept
        return totals[:, width:width + num_points]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        (weights,) = ctx.saved_tensors
        first, kept, width = ctx.first, ctx.kept, len(ctx.kept)
        ctx.kept = ctx.first = None
        # d/ds exp(−(x − s)²/(2h²)) = exp(·)·(x − s)/h², and the padding's gradient is 0
        g = torch.nn.functional.pad(grad / ctx.bandwidth**2, (width, width))
        out = None
        for j, (d, kernel) in enumerate(kept):
            term = d.mul_(kernel).mul_(g.gather(1, first + j if j else first))
            out = term if out is None else out.add_(term)
        if weights is not None:
            out.mul_(weights)
        return out, None, None, None, None


def kde_density(samples: torch.Tensor, points: torch.Tensor, bandwidth: float = BANDWIDTH,
                weights: torch.Tensor | None = None, evenly_spaced: bool = False) -> torch.Tensor:
    """Gaussian KDE of each row of ``samples`` (R, M) evaluated at ``points`` (R, P) → (R, P).
    ``weights`` (M,) counts each column that many times (a value that occurs twice, stored once).
    ``evenly_spaced``: each row of ``points`` is an even grid (constants): far points are skipped."""
    width = None
    if evenly_spaced and not points.requires_grad and not torch.compiler.is_compiling():
        width = _band_width(points, bandwidth, samples.dtype)
    if width is None:
        kernel_sum = _GaussianKde.apply(samples, points, bandwidth, weights)
    else:
        kernel_sum = _BandedKde.apply(samples, points, bandwidth, weights, width)
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
    p = kde_density(samples, points, bandwidth, weights, evenly_spaced=True) + eps
    integrand = -p * torch.log(p)
    dx = points[:, 1:] - points[:, :-1]
    return ((integrand[:, 1:] + integrand[:, :-1]) * 0.5 * dx).sum(dim=-1)
