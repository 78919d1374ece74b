"""One progress bar for a grid run: its stage runs as they finish, weighted by the time the plan
expects each to take, so the bar's remaining time means something from the first minute (the
long synthesis runs come first, a plain count would promise too little)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from tqdm import tqdm

# model name → (stage, calibration method) → expected seconds; set by the plan a command prints
# before it runs its flow (a deployment run has none and counts stage runs instead)
_EXPECTED: dict[str, Callable[[str, str | None], float]] = {}


def expect(model: str, seconds: Callable[[str, str | None], float]) -> None:
    _EXPECTED[model] = seconds


class GridProgress:
    """``track(stage, method, future)`` for each submitted stage run; ``close()`` at the end."""

    def __init__(self, model: str, desc: str):
        self._seconds = _EXPECTED.get(model)
        self._lock = threading.Lock()
        self._done: Counter[str] = Counter()
        self._total: Counter[str] = Counter()
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}"
        self._bar = tqdm(total=0.0, desc=desc, bar_format=fmt, smoothing=0.05)

    def _weight(self, stage: str, method: str | None) -> float:
        # a small floor: a stage the plan calls free still moves the bar
        return max(0.05, self._seconds(stage, method)) if self._seconds else 1.0

    def track(self, stage: str, method: str | None, future) -> None:
        weight = self._weight(stage, method)
        with self._lock:
            self._total[stage] += 1
            self._bar.total += weight  # drawn at the next finish: while stages are still being submitted
            # the total grows under a rate of almost nothing, and the remaining time would climb
        add = getattr(future, "add_done_callback", None)
        if add is None:  # already a result (an inline run)
            self._finished(stage, weight)
        else:
            add(lambda _: self._finished(stage, weight))

    def _finished(self, stage: str, weight: float) -> None:
        with self._lock:
            self._done[stage] += 1
            self._bar.set_postfix_str(" ".join(f"{s} {self._done[s]}/{n}" for s, n in self._total.items()
                                               if n > 1 or self._done[s] < n), refresh=False)
            self._bar.update(weight)

    def close(self) -> None:
        self._bar.close()
