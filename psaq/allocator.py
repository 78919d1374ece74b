"""Keep freed memory in the process instead of handing it back to the system at every step.

A synthesis or evaluation step allocates and frees the same few dozen tensors of a few hundred
KB to a few MB, thousands of times. glibc's malloc returns the top of its heap to the kernel
whenever more than a small threshold lies free there, and serves allocations above its (moving)
mmap threshold from fresh mappings, so each step touches new pages again. Measured on a 28-px
Swin at batch 32, 2 threads, a forward + backward and an estimator pass together: 7,000–10,000
page faults by default, 90–260 with the settings below. A synthesis step, in alternating
processes (``benchmarks/allocator_ab.py``): DeiT-Tiny at 224 px 1.43 s against 1.64 s, the Swin
0.037 s against 0.040 s, digits-vit unchanged. The numbers computed are the same; only where the
memory comes from changes. The cost is a resident size that stays at the run's peak (plus at
most ``TRIM_BYTES`` kept free), which a process that runs one stage after another reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3

TRIM_BYTES = 1 << 30  # free memory kept at the heap top before any is returned
TOP_PAD_BYTES = 64 << 20  # the heap grows by at least this much at a time
MMAP_BYTES = 256 << 20  # only allocations above this get their own mapping


@dataclass(frozen=True)
class AllocatorSetting:
    applied: bool
    reason: str  # one line for the log


_state: dict[str, AllocatorSetting] = {}


def _glibc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # present in glibc only (musl and macOS lack it)
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory(enabled: bool = True) -> AllocatorSetting:
    """Set glibc's thresholds for the rest of this process (once; later calls report the first).
    Anywhere else (macOS, musl, Windows), or with ``enabled`` false, the system's defaults stay."""
    if "setting" in _state:
        return _state["setting"]
    if not enabled:
        setting = AllocatorSetting(False, "system defaults (runtime.keep_freed_memory: false)")
    else:
        libc = _glibc()
        if libc is None:
            setting = AllocatorSetting(False, "system defaults (not glibc)")
        else:
            ok = all(libc.mallopt(param, ctypes.c_int(value)) == 1 for param, value in (
                (_M_MMAP_THRESHOLD, MMAP_BYTES), (_M_TRIM_THRESHOLD, TRIM_BYTES), (_M_TOP_PAD, TOP_PAD_BYTES)))
            setting = AllocatorSetting(ok, "freed memory kept for reuse (glibc mallopt)" if ok
                                       else "system defaults (glibc refused mallopt)")
    _state["setting"] = setting
    return setting
