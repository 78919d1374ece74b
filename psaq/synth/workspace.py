"""Scratch buffers the estimator reuses from step to step instead of allocating them anew.

A fresh multi-MB tensor costs its page faults on first touch (0.3 ms per MB on the 2-core
machine this was measured on, more than the arithmetic written into it): on a 28-px Swin, the
kernels and differences allocated at every step cost about a third of the estimator. The
allocator hands such sizes back to the system when they are freed, so every step paid again.

Buffers are kept per thread (the pipeline synthesizes grid points in threads side by side) and
handed out only while nobody holds them: ``take`` removes a buffer from the pool, ``give``
returns it. A buffer that is never given back is simply freed with its last reference.
"""

from __future__ import annotations

import threading

import torch

# What one thread keeps between steps; beyond it, returned buffers are freed as before.
_POOL_BYTES = 256 << 20

_local = threading.local()


def _pool() -> dict[tuple, list[torch.Tensor]]:
    if not hasattr(_local, "pool"):
        _local.pool = {}
    return _local.pool


def take(like: torch.Tensor, numel: int) -> torch.Tensor:
    """A 1-D buffer of ``numel`` elements of ``like``'s dtype and device, contents undefined."""
    free = _pool().get((like.dtype, like.device, numel))
    return free.pop() if free else like.new_empty(numel)


def give(*buffers: torch.Tensor | None) -> None:
    """Return buffers from ``take`` for later calls in this thread."""
    pool = _pool()
    for buffer in buffers:
        if buffer is None:
            continue
        held = sum(b.numel() * b.element_size() for free in pool.values() for b in free)
        if held + buffer.numel() * buffer.element_size() <= _POOL_BYTES:
            pool.setdefault((buffer.dtype, buffer.device, buffer.numel()), []).append(buffer)


def clear() -> None:
    """Free what this thread keeps."""
    _pool().clear()
