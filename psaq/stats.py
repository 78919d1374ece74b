"""Paired comparisons of two calibration methods with a confidence interval.

Two methods evaluated on the same runs (same model, same seed) and the same test images are
compared image by image. The interval is a two-level (hierarchical) percentile bootstrap:
each replicate resamples the runs, then the test images, with replacement, and averages the
per-image differences. It covers both sources of noise: which model and seed, and which test
images. Where the interval covers 0 the data cannot tell the two methods apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95
REPLICATES = 2000


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # top-1 points, a − b
    low: float
    high: float
    runs: int
    images: int

    @property
    def decided(self) -> bool:
        """Whether the interval excludes zero."""
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {**asdict(self), "decided": self.decided}

    def __str__(self) -> str:
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]"


def paired_difference(correct_a: np.ndarray, correct_b: np.ndarray, replicates: int = REPLICATES,
                      confidence: float = CONFIDENCE, seed: int = 0) -> PairedDifference:
    """``correct_*``: (runs, images) booleans, run r of a paired with run r of b.

    Returns the mean difference in top-1 points and its bootstrap interval."""
    a, b = np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.size == 0:
        raise ValueError(f"paired results need equal (runs, images) shapes, got {a.shape} and {b.shape}")
    diff = 100.0 * (a - b)
    runs, images = diff.shape
    rng = np.random.default_rng(seed)
    values = np.empty(replicates)
    for i in range(replicates):
        rows = rng.integers(0, runs, size=runs)
        cols = rng.integers(0, images, size=images)
        values[i] = diff[rows][:, cols].mean()
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return PairedDifference(float(diff.mean()), float(low), float(high), runs, images)


def unpack_correct(packed: str, count: int) -> np.ndarray:
    """Per-image correctness stored as hex of packed bits (``pack_correct``)."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(packed), dtype=np.uint8))[:count].astype(bool)


def pack_correct(correct) -> str:
    return np.packbits(np.asarray(correct, dtype=bool)).tobytes().hex()
