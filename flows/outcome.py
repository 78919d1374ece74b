"""What a flow run tells the person who started it: its final state's message.

A deployment run is watched with ``prefect deployment run … --watch``, the UI's run page or
``prefect flow-run inspect``; all three show the final state and its message, and the run's log
ends with ``Finished in state Completed('<message>')``. So a run that worked ends with its
result in that message, and a run stopped by bad input ends with the one-line reason, logged
without a traceback. Called directly (``python -m flows.quantize``), the flow still returns its
result or raises the psaq error, which the entry point prints as one line.
"""

from __future__ import annotations

import functools
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from prefect.states import Failed

from flows.entry import drop_psaq_tracebacks
from psaq.errors import PsaqError


def one_line_failures(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Under ``@flow``: a psaq error ends the run Failed with its message and no traceback (the
    error itself is the state's data, so a direct call raises it as before)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PsaqError as exc:
            drop_psaq_tracebacks()
            return Failed(message=str(exc), data=exc)  # the reason, as the command line prints it: no class name

    return run


def point_summary(model: str, rec: dict) -> str:
    if "feature_cosine" in rec:  # a headless backbone: k-NN over its own features
        text = (f"{model} (headless) {rec['bits']} {rec['method']} seed {rec['seed']}: k-NN top-1 {rec['top1']:.2f} % "
                f"(FP32 {rec['fp32_top1']:.2f} %, agreement {rec['agreement']:.2f} %), feature cosine "
                f"{rec['feature_cosine']:.4f}; metrics {rec['metrics']}")
    else:
        text = (f"{model} {rec['bits']} {rec['method']} seed {rec['seed']}: top-1 {rec['top1']:.2f} % "
                f"(FP32 {rec['fp32_top1']:.2f} %, agreement {rec['agreement']:.2f} %); metrics {rec['metrics']}")
    return text + v2_warning(rec)


def v2_warning(rec: dict) -> str:
    """What the run's summary adds when V2's checks kept an earlier round: the warning the
    command line prints, where a deployment run's watcher sees it."""
    from psaq.stages.reconstruct import history, kept_round

    kept = kept_round(history(rec["quantized"])) if rec.get("quantized") else None
    return (f"; warning: psaq-v2 kept round {kept[0]} of {kept[1]} (its student ended further from the teacher "
            "on images it never trained on; round 0 is the calibrated one)") if kept else ""


def grid_summary(model: str, records: list[dict], report: str | None = None) -> str:
    """Mean top-1 per bit setting and method over seeds, in the grid's order, then the report."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for rec in records:
        cells[(rec["bits"], rec["method"])].append(rec["top1"])
    by_bits: dict[str, list[str]] = defaultdict(list)
    for (bits, method), values in cells.items():
        by_bits[bits].append(f"{method} {statistics.fmean(values):.2f}")
    fp32 = statistics.fmean(r["fp32_top1"] for r in records) if records else float("nan")
    parts = [f"{model}: {len(records)} points, mean top-1 % (FP32 {fp32:.2f})"]
    parts += [f"{bits}: " + ", ".join(cells_) for bits, cells_ in by_bits.items()]
    kept = sum(bool(v2_warning(rec)) for rec in records)
    if kept:
        parts.append(f"warning: psaq-v2 kept an earlier round than its last in {kept} point(s) (its student ended "
                     "further from the teacher on images it never trained on)")
    if report:
        parts.append(f"report {report}")
    return "; ".join(parts)


def artifact_key(kind: str, model: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for one model: each run adds a
    version under its model's key, so the artifact page lists a model's history."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{kind}-{model}".lower()).strip("-")


def publish_artifact(kind: str, model: str, markdown: str, description: str) -> None:
    from prefect.artifacts import create_markdown_artifact
    from prefect.runtime import flow_run

    run = flow_run.get_name() or "local run"
    create_markdown_artifact(key=artifact_key(kind, model), markdown=markdown,
                             description=f"{description} (flow run {run})")
