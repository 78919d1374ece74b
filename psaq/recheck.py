"""Evaluate a grid again under today's code and environment, and compare with what is stored.

The store reuses a result whose key (inputs and psaq's code) is unchanged, so a new torch,
timm or ONNX Runtime, or another CPU, never reaches a stored figure. A recheck recomputes the
evaluations (FP32 and every quantized point) into a scratch store, reading everything upstream
(models, sample sets, quantized models) from the project's store, and compares image by image.
The same code and libraries on the same CPU reproduce every bit.
"""

from __future__ import annotations

import platform
import tempfile
from importlib import metadata
from pathlib import Path

from psaq.io import read_json
from psaq.params import Params
from psaq.pipeline import Point, inline_runner, resolve, submit_points
from psaq.store import Store

RECHECKED = ("fp32", "evaluate")  # the stages a recheck computes again
LIBRARIES = ("torch", "timm", "numpy", "onnxruntime", "onnx", "safetensors")


def environment() -> dict[str, str]:
    """What a drift could come from: the libraries that compute the figures, and the machine."""
    out = {"python": platform.python_version(), "machine": platform.processor() or platform.machine()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def recheck(params: Params, points: list[Point], store: Store, progress: bool = True) -> dict:
    """Every point's evaluation computed again and compared with the stored one: {"points": [...],
    "differ": n, "environment": {...}}. The stored results must all be there (run the grid first)."""
    stored_run = inline_runner(Store(store.root, read_only=True), progress=False)
    stored = submit_points(stored_run, params, points, progress=False)
    with tempfile.TemporaryDirectory(prefix="psaq-recheck-") as scratch:
        fresh_run = inline_runner(Store(scratch), progress=progress)

        def submit(stage: str, **inputs):
            return (fresh_run if stage in RECHECKED else stored_run)(stage, **inputs)

        fresh = submit_points(submit, params, points, progress=progress)
        rows = []
        for old, new in zip(stored, fresh):
            a, b = (read_json(resolve(job["evaluate"]).verify()) for job in (old, new))
            rows.append({**old["point"].coords, "top1_stored": a["top1"], "top1_now": b["top1"],
                         "fp32_stored": a["fp32_top1"], "fp32_now": b["fp32_top1"],
                         "same": a["correct"] == b["correct"] and a["fp32_top1"] == b["fp32_top1"]})
    return {"points": rows, "differ": sum(not r["same"] for r in rows), "environment": environment()}


def summary_line(result: dict) -> str:
    n, differ = len(result["points"]), result["differ"]
    if not differ:
        return f"rechecked {n} evaluations under today's code and libraries: every one reproduced image by image"
    worst = max(result["points"], key=lambda r: abs(r["top1_now"] - r["top1_stored"]))
    return (f"rechecked {n} evaluations: {differ} differ from the stored results (largest: {worst['method']} seed "
            f"{worst['seed']} {worst['bits']}, top-1 {worst['top1_stored']:.2f} → {worst['top1_now']:.2f})")


def write(result: dict, folder: Path) -> Path:
    from psaq.io import write_json

    return write_json(folder / "recheck.json", result)
