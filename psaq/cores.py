"""How many torch threads to run: the cores this process may use that other work leaves idle.

Torch starts one OpenMP thread per core and its threads wait for each other at the end of every
parallel operation. When another program holds one of the cores, every such wait lasts until
the scheduler gives the descheduled thread its turn, and a step made of thousands of small
operations collapses (measured on 2 cores, a 28-px ViT's synthesis step: 25 ms quiet, 97 ms
beside one CPU-bound process with 2 threads, 33 ms with 1 thread; ``benchmarks/synthesis_speed.py``).
So a run that is not told its thread count takes one per idle core, measured once when it
starts; a run's arithmetic then stays the same from its first step to its last.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_S = 0.2  # how long the idle cores are measured


@dataclass(frozen=True)
class Threads:
    count: int
    reason: str  # one line for the log: where the count came from


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity set, which containers and taskset narrow)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return list(range(os.cpu_count() or 1))


def _cpu_times(cores: list[int], stat: Path) -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks of each core since boot, from /proc/stat."""
    out = {}
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        core = int(name[3:])
        if core in cores:
            ticks = [int(f) for f in fields]
            idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
            out[core] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return out


def idle_cores(sample_s: float = SAMPLE_S, stat: Path = Path("/proc/stat")) -> float | None:
    """Cores of the affinity set that were idle over the next ``sample_s`` seconds (a fraction:
    two cores each half busy count as one idle core); None where /proc/stat cannot be read."""
    cores = usable_cores()
    try:
        before = _cpu_times(cores, stat)
        time.sleep(sample_s)
        after = _cpu_times(cores, stat)
    except (OSError, ValueError, IndexError):
        return None
    idle = 0.0
    for core, (busy, total) in after.items():
        if core in before:
            elapsed = total - before[core][1]
            if elapsed > 0:
                idle += 1.0 - (busy - before[core][0]) / elapsed
    return idle if after else None


def choose_threads(requested: int | None) -> Threads:
    """``requested`` (runtime.threads) wins; then OMP_NUM_THREADS, which torch already obeys;
    else one thread per idle usable core, at least one."""
    if requested:
        return Threads(requested, f"{requested} (runtime.threads)")
    if os.environ.get("OMP_NUM_THREADS"):
        import torch

        return Threads(torch.get_num_threads(), f"{torch.get_num_threads()} (OMP_NUM_THREADS)")
    usable = len(usable_cores())
    idle = idle_cores()
    if idle is None:
        return Threads(usable, f"{usable} (one per usable core)")
    count = max(1, min(usable, int(idle + 0.5)))
    busy = "" if count == usable else f"; {usable - idle:.1f} busy with other work"
    return Threads(count, f"{count} ({usable} usable cores{busy})")


def use_threads(requested: int | None) -> Threads:
    """``choose_threads`` applied to torch, for the rest of this process."""
    import torch

    chosen = choose_threads(requested)
    torch.set_num_threads(chosen.count)
    return chosen
