"""A grid run through the stage graph, written once for every runner.

``submit(stage, **inputs)`` runs one stage and returns something with ``.result()``: the
command line and the DVC stage commands run stages inline (``Inline``), the Prefect flows
submit them as tasks (futures). Inputs may be such results; runners resolve them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psaq.errors import ConfigError
from psaq.io import read_json, read_samples
from psaq.models import ModelConfig
from psaq.params import Params, parse_setting
from psaq.quant import QuantConfig
from psaq.stages import calibrate, data, evaluate, export, fp32, model, reconstruct, report, samples
from psaq.store import Store
from psaq.synth import SynthesisConfig

MAX_POINTS = 500  # a grid above this asks for an explicit go-ahead


@dataclass(frozen=True)
class Point:
    train_seed: int
    method: str
    seed: int
    bits: str
    observer: str

    @property
    def name(self) -> str:
        return f"{self.method}-s{self.seed}-{self.bits}-{self.observer}-m{self.train_seed}"

    @property
    def coords(self) -> dict:
        return dataclasses.asdict(self)


def grid_points(params: Params, allow_large: bool = False) -> list[Point]:
    g = params.grid
    pts = [Point(*p) for p in itertools.product(g.train_seeds, g.methods, g.seeds, g.bits, g.observers)]
    if len(pts) > MAX_POINTS and not allow_large:
        raise ConfigError(f"the grid has {len(pts)} points (over {MAX_POINTS}); shrink grid: in params.yaml or pass "
                          "--allow-large-grid to run it")
    return pts


def model_config(params: Params, train_seed: int) -> ModelConfig:
    return dataclasses.replace(params.model, train_seed=train_seed)


def synthesis_config(params: Params, point: Point) -> SynthesisConfig:
    return dataclasses.replace(params.synthesis, method=point.method, seed=point.seed)


def quant_config(params: Params, point: Point) -> QuantConfig:
    w_bits, a_bits, sites = parse_setting(point.bits)
    return dataclasses.replace(params.quant, w_bits=w_bits, a_bits=a_bits, act_observer=point.observer,
                               sites=sites or params.quant.sites)


class Inline:
    """A stage that already ran: the runner of the command line and of the DVC stage commands."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


def resolve(value: Any) -> Any:
    return value.result() if hasattr(value, "result") and callable(value.result) else value


# stage name → its function with the store bound: (store, **inputs) → (output, built)
STAGE_FUNCTIONS: dict[str, Callable] = {
    "data": lambda store, **kw: (data.run(**kw), False),
    "model": model.run,
    "fp32": fp32.run,
    "samples": samples.run,
    "calibrate": calibrate.run,
    "reconstruct": reconstruct.run,
    "evaluate": evaluate.run,
    "export": export.run,
    "report": report.run,
}


def inline_runner(store: Store, progress: bool = True, log: Callable[[str], None] | None = None):
    """``submit`` that runs each stage at once in this process."""
    def submit(stage: str, **inputs):
        inputs = {k: resolve(v) for k, v in inputs.items()}
        if stage in ("model", "samples", "fp32", "reconstruct") and "progress" not in inputs:
            inputs["progress"] = progress
        out, built = STAGE_FUNCTIONS[stage](store, **inputs)
        if log and stage != "data":
            # a stage that is switched off hands one of its inputs on unchanged
            passed = not built and any(out is v for v in inputs.values())
            log(f"{stage:<10} {'built' if built else 'passed' if passed else 'reused'}")
        return Inline(out)

    return submit


def submit_points(submit, params: Params, points: list[Point], progress: bool = True) -> list[dict]:
    """Every stage of every point, sharing what points have in common: one model and one FP32
    evaluation per training seed, one sample set per (training seed, method, seed)."""
    rt = params.runtime
    weights = {seed: submit("model", model=model_config(params, seed), train=params.train)
               for seed in dict.fromkeys(p.train_seed for p in points)}  # model problems are reported first
    data_fp = submit("data", model=model_config(params, points[0].train_seed if points else 0),
                     dataset=rt.dataset, calib_dataset=rt.calib_dataset)
    fp32s, sample_sets, jobs = {}, {}, []
    for point in points:
        mcfg = model_config(params, point.train_seed)
        if point.train_seed not in fp32s:
            fp32s[point.train_seed] = submit("fp32", model=mcfg, weights=weights[point.train_seed], eval_cfg=params.eval,
                                             data_fp=data_fp, dataset=rt.dataset, device=rt.device)
        w = weights[point.train_seed]
        key = (point.train_seed, point.method, point.seed)
        if key not in sample_sets:
            sample_sets[key] = submit("samples", model=mcfg, weights=w, synth=synthesis_config(params, point),
                                      data_fp=data_fp, dataset=rt.dataset, calib_dataset=rt.calib_dataset,
                                      device=rt.device)
        calibrated = submit("calibrate", model=mcfg, weights=w, samples=sample_sets[key],
                            quant=quant_config(params, point), stem=point.name, device=rt.device)
        quantized = submit("reconstruct", model=mcfg, weights=w, samples=sample_sets[key], quantized=calibrated,
                           recon=params.reconstruct, stem=point.name, device=rt.device,
                           synth=synthesis_config(params, point), adaptive=params.adaptive)
        metrics = submit("evaluate", model=mcfg, weights=w, quantized=quantized, fp32=fp32s[point.train_seed],
                         eval_cfg=params.eval, data_fp=data_fp, dataset=rt.dataset, stem=point.name, device=rt.device)
        exported = submit("export", model=mcfg, weights=w, quantized=quantized, stem=point.name,
                          export_cfg=params.export) if params.grid.export else None
        jobs.append({"point": point, "weights": w, "samples": sample_sets[key], "calibrated": calibrated,
                     "quantized": quantized, "metrics": metrics, "exported": exported, "fp32": fp32s[point.train_seed]})
    return jobs


def record(job: dict) -> dict:
    """A finished point as a flat record: coordinates, metrics, synthesis figures, artifact paths."""
    samples_art, metrics_art = resolve(job["samples"]), resolve(job["metrics"])
    exported, quantized = resolve(job["exported"]) or {}, resolve(job["quantized"])
    meta = read_samples(samples_art.verify()).metadata
    metrics = read_json(metrics_art.verify())
    return {**job["point"].coords, **metrics, "synthesis_wall_s": meta.get("wall_s"), "steps_per_s": meta.get("steps_per_s"),
            "synthesis_steps": meta.get("steps"),
            "samples": samples_art.path, "samples_sha256": samples_art.sha256, "metrics": metrics_art.path,
            "metrics_sha256": metrics_art.sha256, "quantized": quantized.path,
            "integer": exported["integer"].path if exported else None, "onnx": exported["onnx"].path if exported else None,
            "weights_sha256": resolve(job["weights"]).sha256}


def report_inputs(params: Params, jobs: list[dict], records: list[dict]) -> dict:
    """The report covers the first training seed's models for its figures and every record."""
    seed0 = params.grid.train_seeds[0] if params.grid.train_seeds else jobs[0]["point"].train_seed
    first = {}
    for job in jobs:
        p = job["point"]
        if p.train_seed == seed0 and p.method not in first:
            first[p.method] = resolve(job["samples"])
    return {"model": model_config(params, seed0), "weights": resolve(next(j["weights"] for j in jobs
                                                                           if j["point"].train_seed == seed0)),
            "records": records, "samples": first, "dataset": params.runtime.dataset,
            "calib_dataset": params.runtime.calib_dataset, "device": params.runtime.device}
