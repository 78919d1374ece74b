"""A grid run through the stage graph, written once for every runner.

``submit(stage, **inputs)`` runs one stage and returns something with ``.result()``: the
command line and the DVC stage commands run stages inline (``Inline``), the Prefect flows
submit them as tasks (futures). Inputs may be such results; runners resolve them.

A stage's inputs are wired here once, from declarations: its upstream outputs arrive under the
name each upstream stage declares (``Stage.passes_as``), and every other argument its ``run``
takes is a setting that ``SETTINGS`` builds from params.yaml and the grid point. A new stage
needs its module and its line in ``psaq.stages.graph``; a settings section of its own is a
``psaq.params`` section, which reaches every argument of that name; nothing here changes.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from psaq.errors import ConfigError
from psaq.io import read_json, read_samples
from psaq.models import ModelConfig
from psaq.params import SECTIONS, Params, parse_setting
from psaq.quant import QuantConfig
from psaq.stages.graph import GRAPH, READS_OUTSIDE, RUN, producer
from psaq.stages.stage import Point
from psaq.store import Store
from psaq.synth import SynthesisConfig
from psaq.synth.methods import method_of

MAX_POINTS = 500  # a grid above this asks for an explicit go-ahead


def point_of(params: Params) -> Point:
    """The one point that params.yaml's own sections name (what ``psaq quantize`` and the ``quantize`` flow run)."""
    q = params.quant
    return Point(params.model.train_seed, params.synthesis.method, params.synthesis.seed, q.w_bits, q.a_bits,
                 q.act_observer)


def grid_points(params: Params, allow_large: bool = False) -> list[Point]:
    g = params.grid
    settings = [parse_setting(tag) for tag in g.bits]
    pts = [Point(train_seed, method, seed, s.w_bits, s.a_bits, observer, s.sites)
           for train_seed, method, seed, s, observer in itertools.product(g.train_seeds, g.methods, g.seeds, settings,
                                                                          g.observers)]
    if len(pts) > MAX_POINTS and not allow_large:
        raise ConfigError(f"the grid has {len(pts)} points (over {MAX_POINTS}); shrink grid: in params.yaml or pass "
                          "--allow-large-grid to run it")
    return pts


def model_config(params: Params, train_seed: int) -> ModelConfig:
    return dataclasses.replace(params.model, train_seed=train_seed)


def synthesis_config(params: Params, point: Point) -> SynthesisConfig:
    return dataclasses.replace(params.synthesis, method=point.method, seed=point.seed)


def quant_config(params: Params, point: Point) -> QuantConfig:
    return dataclasses.replace(params.quant, w_bits=point.w_bits, a_bits=point.a_bits, act_observer=point.observer,
                               sites=point.sites or params.quant.sites)


# A stage argument that is a setting → how params.yaml and the grid point make it. An argument
# named after a params.yaml section (``train``, ``adaptive`` …) is that section as it is.
SETTINGS: dict[str, Callable[[Params, Point], Any]] = {
    "model": lambda params, point: model_config(params, point.train_seed),
    "synth": synthesis_config,
    "quant": quant_config,
    "recon": lambda params, point: params.reconstruct,
    "eval_cfg": lambda params, point: params.eval,
    "export_cfg": lambda params, point: params.export,
    "dataset": lambda params, point: params.runtime.dataset,
    "calib_dataset": lambda params, point: params.runtime.calib_dataset,
    "device": lambda params, point: params.runtime.device,
    "stem": lambda params, point: point.name,
}
RUNNER_ARGS = ("store", "progress")  # given by the runner, not by params.yaml


@lru_cache(maxsize=None)
def _parameters(fn: Callable) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def _arguments(stage: str) -> tuple[str, ...]:
    """The names a stage's ``run`` takes (read once per function, not at every submit)."""
    return _parameters(RUN[stage])


@lru_cache(maxsize=None)
def setting_names(stage: str) -> tuple[str, ...]:
    """The arguments of a stage's ``run`` that are settings: all but its upstream outputs and the runner's."""
    upstream = {GRAPH[up].passes_as for up in GRAPH[stage].needs}
    names = tuple(n for n in _arguments(stage) if n not in upstream and n not in RUNNER_ARGS)
    unknown = [n for n in names if n not in SETTINGS and n not in SECTIONS]
    if unknown:
        raise TypeError(f"stage '{stage}' takes {unknown}, which are neither its upstream outputs, nor in SETTINGS, "
                        "nor params.yaml sections")
    return names


def settings(stage: str, params: Params, point: Point) -> dict[str, Any]:
    return {name: SETTINGS[name](params, point) if name in SETTINGS else getattr(params, name)
            for name in setting_names(stage)}


def uses_store(stage: str) -> bool:
    """False for a stage that only reads (``data`` fingerprints the datasets) and builds nothing."""
    return "store" in _arguments(stage)


def reads_outside(params: Params) -> dict[str, str]:
    """Stage → what it reads outside the project under these params (a dataset folder, a
    checkpoint, timm's cache), for every grid point; stages that read nothing there are left out."""
    found: dict[str, str] = {}
    for stage, fn in READS_OUTSIDE.items():
        for point in grid_points(params, allow_large=True):
            args = settings(stage, params, point)
            what = fn(**{name: args[name] for name in _parameters(fn)})
            if what:
                found[stage] = what
                break
    return found


def run_stage(stage: str, store: Store, **inputs) -> tuple[Any, bool]:
    """(output, built): the stage's function with the store given where it takes one."""
    return RUN[stage](store, **inputs) if uses_store(stage) else (RUN[stage](**inputs), False)


def takes_progress(stage: str) -> bool:
    return "progress" in _arguments(stage)


class Inline:
    """A stage that already ran: the runner of the command line and of the DVC stage commands."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


def resolve(value: Any) -> Any:
    return value.result() if hasattr(value, "result") and callable(value.result) else value


def inline_runner(store: Store, progress: bool = True, log: Callable[[str], None] | None = None):
    """``submit`` that runs each stage at once in this process."""
    def submit(stage: str, **inputs):
        inputs = {k: resolve(v) for k, v in inputs.items()}
        if takes_progress(stage) and "progress" not in inputs:
            inputs["progress"] = progress
        out, built = run_stage(stage, store, **inputs)
        if log and uses_store(stage):
            # a stage that is switched off hands one of its inputs on unchanged
            passed = not built and any(out is v for v in inputs.values())
            log(f"{stage:<10} {'built' if built else 'passed' if passed else 'reused'}")
        return Inline(out)

    return submit


# stages run once per grid, over every point's results (not by ``submit_points``)
GRID_STAGES = ("report",)


def point_stages(params: Params) -> list[str]:
    return [name for name in GRAPH if name not in GRID_STAGES
            and (name != "export" or any(params.grid.exports(m) for m in params.grid.methods))]


def runs_at(stage: str, params: Params, point: Point) -> bool:
    """Whether ``stage`` runs for ``point``: exports only for the methods grid.export names."""
    return stage != "export" or params.grid.exports(point.method)


def refuse_label_needs(params: Params, points: list[Point]) -> None:
    """A backbone declared headless (``model.headless``, or ``num_classes: 0`` in its arguments) has
    no classifier: a calibration mode that needs one is refused before any stage runs, not after
    its samples are made. (A timm model headless by its own default is refused where it is used.)"""
    if not (params.model.headless or params.model.model_args.get("num_classes") == 0):
        return
    for name in dict.fromkeys(p.method for p in points):
        mode = method_of(name)
        if mode.draws_labels and params.synthesis.ce_weight:
            raise ConfigError(f"calibration mode '{name}' draws a class per image for its cross-entropy term, but the "
                              "headless backbone has no classifier; calibrate with gaussian, real or psaq-v2 (with "
                              "adaptive.discrepancy: features), or set synthesis.ce_weight: 0")
        if mode.co_evolves and params.adaptive.discrepancy == "logits":
            raise ConfigError(f"calibration mode '{name}' compares the student with the teacher on classifier logits "
                              "(adaptive.discrepancy: logits), but the headless backbone has none; set "
                              "adaptive.discrepancy: features (--v2-discrepancy features)")


def submit_points(submit, params: Params, points: list[Point], progress: bool = True) -> list[dict]:
    """Every stage of every point, in graph order, each run once per value of its own grid
    dimensions (one model and one FP32 evaluation per training seed, one sample set per
    training seed, method and seed). Returns a job per point: its point and each stage's result."""
    refuse_label_needs(params, points)
    results: dict[str, dict[tuple, Any]] = {name: {} for name in GRAPH}
    stages = point_stages(params)
    for name in stages:  # stage by stage: a stage's problems (an unknown model, say) are reported before the next starts
        stage = GRAPH[name]
        for point in points:
            item = stage.item(point)
            if item not in results[name] and runs_at(name, params, point):
                upstream = {GRAPH[up].passes_as: results[up][GRAPH[up].item(point)] for up in stage.needs}
                results[name][item] = submit(name, **settings(name, params, point), **upstream)
    return [{"point": p, **{name: results[name].get(GRAPH[name].item(p)) for name in stages}} for p in points]


def record(job: dict) -> dict:
    """A finished point as a flat record: coordinates, metrics, synthesis figures, artifact paths."""
    samples_art, metrics_art = resolve(job["samples"]), resolve(job["evaluate"])
    exported, quantized = resolve(job.get("export")) or {}, resolve(job[producer("quantized")])
    meta = read_samples(samples_art.verify()).metadata
    metrics = read_json(metrics_art.verify())
    return {**job["point"].coords, **metrics, "synthesis_wall_s": meta.get("wall_s"), "steps_per_s": meta.get("steps_per_s"),
            "synthesis_steps": meta.get("steps"),
            "samples": samples_art.path, "samples_sha256": samples_art.sha256, "metrics": metrics_art.path,
            "metrics_sha256": metrics_art.sha256, "quantized": quantized.path,
            "integer": exported["integer"].path if exported else None, "onnx": exported["onnx"].path if exported else None,
            "weights_sha256": resolve(job["model"]).sha256}


def report_inputs(params: Params, jobs: list[dict], records: list[dict]) -> dict:
    """The report covers the first training seed's models for its figures and every record."""
    seed0 = params.grid.train_seeds[0] if params.grid.train_seeds else jobs[0]["point"].train_seed
    first = {}
    for job in jobs:
        p = job["point"]
        if p.train_seed == seed0 and p.method not in first:
            first[p.method] = resolve(job["samples"])
    return {"model": model_config(params, seed0), "weights": resolve(next(j["model"] for j in jobs
                                                                           if j["point"].train_seed == seed0)),
            "records": records, "samples": first, "dataset": params.runtime.dataset,
            "calib_dataset": params.runtime.calib_dataset, "device": params.runtime.device}
