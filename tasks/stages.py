"""One Prefect task per stage of the graph, each a thin wrapper around ``psaq.stages``.

The store is the cache: a stage whose artifact is already published (and passes its hash)
returns it at once, and its task run ends in a ``Cached`` state. Prefect's own result cache
is off, so there is one cache, shared with the command line and the DVC stages.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed

from psaq.pipeline import run_stage, takes_progress, uses_store
from psaq.stages.graph import GRAPH
from tasks.settings import store

_threads: dict[str, int | None] = {"n": None}


def set_threads(n: int | None) -> None:
    """Torch threads per stage run: with concurrent stages, each gets its share of the cores."""
    _threads["n"] = n


def _stage_task(name: str):
    @task(name=name, cache_policy=NO_CACHE, persist_result=False)
    def stage(**inputs: Any):
        if _threads["n"]:
            import torch

            torch.set_num_threads(_threads["n"])
        out, built = run_stage(name, store(), **inputs)
        if not uses_store(name):
            return out
        if not built and any(out is v for v in inputs.values()):  # switched off: an input handed on unchanged
            get_run_logger().info("%s off: its input handed on unchanged", name)
            return Completed(name="Skipped", data=out, message="off: its input handed on unchanged")
        get_run_logger().info("%s %s", name, "built" if built else "reused from the store")
        return out if built else Completed(name="Cached", data=out, message="reused from the store")

    return stage


TASKS = {name: _stage_task(name) for name in GRAPH}


def _label(stage: str, inputs: dict) -> str:
    if "stem" in inputs:
        return f"{stage}-{inputs['stem']}"
    synth = inputs.get("synth")
    if synth is not None:
        return f"{stage}-{synth.method}-s{synth.seed}-m{inputs['model'].train_seed}"
    model = inputs.get("model")
    return f"{stage}-m{model.train_seed}" if model is not None and stage in ("model", "fp32") else stage


def submit(stage: str, **inputs: Any):
    """The pipeline's ``submit`` for Prefect: a task per stage, named after its grid point. Stages
    run without bars of their own: concurrent bars interleave; the flow shows one for the grid."""
    if takes_progress(stage):
        inputs.setdefault("progress", False)
    return TASKS[stage].with_options(task_run_name=_label(stage, inputs)).submit(**inputs)
