"""The allocator setting, each case in a fresh interpreter (the setting is process-wide)."""

import json
import subprocess
import sys

import pytest

from psaq import allocator

# A 100 MB tensor allocated, filled and freed: above glibc's largest moving mmap threshold
# (32 MB), so by default it is a mapping of its own, returned to the system when freed; kept,
# it comes from the heap and its pages stay there, free for the next step's tensors.
_PROBE = """
import ctypes, json, sys
import torch
from psaq.allocator import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
setting = keep_freed_memory(sys.argv[1] == "keep")
free_before = libc.mallinfo2().fordblks
torch.empty(25_000_000).fill_(1.0)
print(json.dumps({"applied": setting.applied, "reason": setting.reason,
                  "kept_mb": (libc.mallinfo2().fordblks - free_before) / 2**20}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(allocator._glibc() is None or not hasattr(allocator._glibc(), "mallinfo2"),
                    reason="glibc 2.33 or later only (mallinfo2)")
def test_freed_memory_stays_in_the_heap_for_reuse():
    system, kept = _probe("system"), _probe("keep")
    assert not system["applied"] and "runtime.keep_freed_memory: false" in system["reason"]
    assert kept["applied"]
    assert system["kept_mb"] < 10  # unmapped when freed
    assert kept["kept_mb"] >= 95  # the 95.4 MB stay, free, in the heap


def test_the_first_decision_stands_for_the_process(monkeypatch):
    monkeypatch.setattr(allocator, "_state", {})
    first = allocator.keep_freed_memory(False)
    assert allocator.keep_freed_memory(True) is first


def test_not_glibc_leaves_the_system_defaults(monkeypatch):
    monkeypatch.setattr(allocator, "_state", {})
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    setting = allocator.keep_freed_memory(True)
    assert not setting.applied and "not glibc" in setting.reason
