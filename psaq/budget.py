"""What a grid will cost on this machine, said before it runs.

The stages' speeds are measured here, in a few seconds, on the grid's own architecture with
random weights (speed does not depend on the weights): one training step, one synthesis step
of each method that optimizes, and evaluation images per second of the float and of a W8A8
model. The plan multiplies them by the work the grid holds: training steps per model,
synthesis steps per sample set, test images per evaluation. The estimate is the cold time, an
empty store; stages already in the store take seconds instead.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import math
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import psaq.families.builtin  # noqa: F401 - registers the families the estimate quantizes
from psaq.data import open_data
from psaq.models import LoadedModel, load_model
from psaq.models.loader import create_architecture
from psaq.models.trainers import TRAINERS
from psaq.pipeline import model_config, synthesis_config
from psaq.quant import QuantConfig, quantized_copy
from psaq.quant.adaptive import AdaptiveConfig, adapt
from psaq.synth import synthesize
from psaq.synth.methods import method_of

_PROBE_BATCH = 128  # images per timed evaluation batch


@dataclass(frozen=True)
class Work:
    """What one params file's grid does on an empty store."""

    model: str
    models_to_train: int
    train_steps: int  # per model
    train_batch: int
    sample_sets: dict[str, int]  # method → sets (each training seed × seed)
    synthesis_steps: int  # per sample set of a method that optimizes
    points: int
    eval_images: int  # per evaluation; one per point and one FP32 per model
    adaptive_points: int = 0  # points of --calib psaq-v2: each runs V2's rounds after calibration
    adaptive_steps: int = 0  # per such point, images' and student's steps together

    def lines(self) -> list[str]:
        sets = ", ".join(f"{n} {m}" for m, n in self.sample_sets.items())
        trained = (f"{self.models_to_train} to train ({self.train_steps} steps of {self.train_batch} each)"
                   if self.models_to_train else "weights given, nothing to train")
        return [f"{self.model}: models {trained}; sample sets {sum(self.sample_sets.values())} ({sets}), "
                f"{self.synthesis_steps} steps each where a method optimizes; {self.points} points, "
                f"each evaluated on {self.eval_images} images"]


@dataclass(frozen=True)
class Speeds:
    """Seconds per unit of work, measured on this machine."""

    train_step_s: float
    synthesis_step_s: dict[str, float]  # method → s per step (methods that optimize)
    float_image_s: float
    quantized_image_s: float
    adaptive_step_s: float = 0.0  # one V2 step (a teacher and a student pass, forward and backward)
    calibrate_s: float = 0.0  # one calibration of the grid's sample size, W8A8
    export_s: float = 0.0  # one ONNX export of a calibrated model


def _random(model_config, device: str | torch.device = "cpu") -> LoadedModel:
    """The architecture with random weights, its input spec and built-in dataset, as the registry
    gives them (nothing trained, nothing downloaded)."""
    config = dataclasses.replace(model_config, random_weights=True, checkpoint=None, pretrained=False)
    return load_model(config, device=device)


def work_of(params, points: list) -> Work:
    """The work in ``points`` (``psaq.pipeline.grid_points``) of ``params``."""
    name = params.model.name
    trains = (name in TRAINERS and not params.model.checkpoint and not params.model.random_weights
              and not params.model.pretrained)
    cfg = params.train.resolved(TRAINERS.get(name).defaults) if trains else None
    seeds = list(dict.fromkeys(p.train_seed for p in points))
    loaded = _random(model_config(params, seeds[0]))
    data = open_data(loaded.spec, params.runtime.dataset, params.runtime.calib_dataset, loaded.dataset)
    train_images = len(data.calib_set) if trains and data.calib_set is not None else 0
    sets: dict[str, int] = {}
    for key in dict.fromkeys((p.train_seed, p.method, p.seed) for p in points):
        sets[key[1]] = sets.get(key[1], 0) + 1
    steps = synthesis_config(params, points[0]).total_steps if points else 0
    a = params.adaptive
    return Work(name, len(seeds) if trains else 0,
                cfg.epochs * math.ceil(train_images / cfg.batch_size) if trains else 0,
                cfg.batch_size if trains else 0, sets, steps, len(points), len(data.eval_set),
                sum(method_of(p.method).co_evolves for p in points), a.rounds * (a.sample_steps + a.student_steps))


def _clock(device: torch.device):
    """What a probe is timed with: on the CPU this process's CPU time, which other work on the
    machine does not stretch (the plan then says what that work will cost: ``slowdown``); on a GPU
    wall time, waited for."""
    return time.process_time if device.type == "cpu" else time.perf_counter


def _timed(fn, device: torch.device) -> float:
    clock = _clock(device)
    started = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return clock() - started


def _median_time(fn, repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn`` on ``device`` (a GPU runs asynchronously: each call is waited for)."""
    _timed(fn, device)  # the first call warms the allocator and the kernels
    return statistics.median(_timed(fn, device) for _ in range(repeats))


def measure(params, work: Work, device: str | torch.device = "cpu") -> Speeds:
    """Time each stage's unit of work on ``params``' architecture with random weights."""
    device = torch.device(device)
    loaded = _random(params.model, device)
    model, spec = loaded.model, loaded.spec
    images = torch.randn((_PROBE_BATCH, *spec.input_size), device=device)
    train_step_s = 0.0
    if work.models_to_train:
        trained = create_architecture(params.model).to(device).train()
        opt = torch.optim.AdamW(trained.parameters())
        batch = torch.randn((work.train_batch, *spec.input_size), device=device)
        target = torch.randint(0, spec.num_classes, (work.train_batch,), device=device)

        def train_step() -> None:
            loss = F.cross_entropy(trained(batch), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        train_step_s = _median_time(train_step, 5, device)
    synthesis: dict[str, float] = {}
    for method in work.sample_sets:
        if not method_of(method).iterates:
            continue
        base = dataclasses.replace(params.synthesis, method=method, rounds=1, warmup_steps=0,
                                   jitter_px=params.synthesis.jitter[:1])

        def run(n: int) -> float:
            return _timed(lambda: synthesize(model, dataclasses.replace(base, steps_per_round=n), spec, device,
                                             progress=False), device)

        synthesis[method] = max(0.0, (run(10) - run(2)) / 8)
    with torch.inference_mode():
        float_s = _median_time(lambda: model(images), 2, device) / _PROBE_BATCH
    calib = torch.randn((params.synthesis.num_samples, *spec.input_size), device=device)
    made: list = []
    calibrate_s = _timed(lambda: made.append(quantized_copy(model, QuantConfig(w_bits=8, a_bits=8), calib, device)),
                         device)
    quantized = made[0]
    with torch.inference_mode():
        quant_s = _median_time(lambda: quantized(images), 2, device) / _PROBE_BATCH
    export_s = _export_time(quantized, spec, device) if any(params.grid.exports(m) for m in params.grid.methods) else 0.0
    adaptive_s = 0.0
    if work.adaptive_points:
        probe = images[: params.synthesis.num_samples]
        student = quantized_copy(model, QuantConfig(w_bits=8, a_bits=8), probe, device)

        def rounds(n: int) -> float:
            cfg = AdaptiveConfig(rounds=1, sample_steps=n, student_steps=n)
            return _timed(lambda: adapt(student, model, probe, params.synthesis, cfg, spec, device, progress=False),
                          device)

        adaptive_s = max(0.0, (rounds(3) - rounds(1)) / 4)
    return Speeds(train_step_s, synthesis, float_s, quant_s, adaptive_s, calibrate_s, export_s)


def _export_time(quantized, spec, device: torch.device) -> float:
    import tempfile
    from pathlib import Path

    from psaq.quant.onnx_export import export_onnx

    import onnx  # noqa: F401 - imported once per process, not once per export: not the export's cost

    with tempfile.TemporaryDirectory() as tmp:
        return _timed(lambda: export_onnx(copy.deepcopy(quantized).cpu(), QuantConfig(w_bits=8, a_bits=8),
                                          torch.zeros((1, *spec.input_size)), Path(tmp) / "probe.onnx"), device)


def estimate(work: Work, speeds: Speeds) -> dict[str, float]:
    """Seconds per stage on an empty store."""
    models = work.models_to_train or 1
    synthesis = sum(n * work.synthesis_steps * speeds.synthesis_step_s.get(m, 0.0) for m, n in work.sample_sets.items())
    stages = {"train": work.models_to_train * work.train_steps * speeds.train_step_s,
              "synthesize": synthesis,
              "evaluate": work.eval_images * (work.points * speeds.quantized_image_s + models * speeds.float_image_s)}
    if work.adaptive_points:
        stages["psaq-v2 rounds"] = work.adaptive_points * work.adaptive_steps * speeds.adaptive_step_s
    return stages


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


# what no probe measures: starting the temporary Prefect server, each task's bookkeeping, the report
# (figures, entropies); measured on the default grid here (2 cores), where they came to 10-20 s
SERVER_START_S = 10.0
TASK_OVERHEAD_S = 0.05
REPORT_S = 6.0


def task_seconds(stage: str, method: str | None, work: Work, speeds: Speeds) -> float:
    """One run of ``stage`` (for calibration ``method``) on an empty store, at the speeds measured."""
    if stage == "model":
        return work.train_steps * speeds.train_step_s if work.models_to_train else 0.0
    if stage == "fp32":
        return work.eval_images * speeds.float_image_s
    if stage == "samples":
        return work.synthesis_steps * speeds.synthesis_step_s.get(method, 0.0)
    if stage == "calibrate":
        return speeds.calibrate_s
    if stage == "reconstruct":
        return work.adaptive_steps * speeds.adaptive_step_s if method and method_of(method).co_evolves else 0.0
    if stage == "evaluate":
        return work.eval_images * speeds.quantized_image_s
    if stage == "export":
        return speeds.export_s
    return 0.0


def makespan(params, points: list, work: Work, speeds: Speeds, workers: int) -> float:
    """Wall seconds of the grid's tasks on ``workers`` threads, in the order the flow submits them:
    stage by stage, each task once per value of its grid dimensions, a worker taking the next task
    and waiting there for its inputs (as Prefect's thread pool does), then the report."""
    from psaq.pipeline import point_stages, runs_at
    from psaq.stages.graph import GRAPH

    free = [0.0] * max(1, workers)
    finished: dict[tuple[str, tuple], float] = {}
    exporter = 0.0  # ONNX exports hold one lock (torch.onnx keeps global state): one at a time
    for name in point_stages(params):
        stage = GRAPH[name]
        for point in points:
            item = stage.item(point)
            if (name, item) in finished or not runs_at(name, params, point):
                continue
            ready = max((finished[(up, GRAPH[up].item(point))] for up in stage.needs), default=0.0)
            start = max(heapq.heappop(free), ready, exporter if name == "export" else 0.0)
            end = start + task_seconds(name, point.method, work, speeds) + TASK_OVERHEAD_S
            if name == "export":
                exporter = end
            finished[(name, item)] = end
            heapq.heappush(free, end)
    return max(finished.values(), default=0.0) + REPORT_S


def slowdown(workers: int, threads: int, idle: float | None, cores: int) -> float:
    """Wall seconds per CPU second of one task's thread in the grid: ``workers`` × ``threads``
    threads share the cores with the work that holds them now (``idle``: the cores it leaves), so
    with 2 cores and 2 one-thread workers 1.0 on a quiet machine, 1.5 with one core held."""
    others = max(0.0, cores - idle) if idle is not None else 0.0
    return max(1.0, (workers * threads + others) / cores)


@dataclass(frozen=True)
class Plan:
    """What a grid will cost here: its work, the speeds measured, and its wall time on the grid's
    workers (``factor``: wall seconds per measured second of a task)."""

    work: Work
    speeds: Speeds
    wall_s: float
    factor: float

    def task_seconds(self, stage: str, method: str | None) -> float:
        return task_seconds(stage, method, self.work, self.speeds) * self.factor


def plan(params, points: list, idle: float | None, cores: int) -> Plan:
    """Measure ``params``' stages with the threads each task will run with (``runtime.threads``),
    schedule the grid on its workers, and stretch it by the cores other work holds (``idle``)."""
    from psaq.device import resolve_device

    device = resolve_device(params.runtime.device)
    threads, workers = params.runtime.threads or 1, params.grid.max_concurrency
    work = work_of(params, points)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        speeds = measure(params, work, device)
    finally:
        torch.set_num_threads(before)
    # the probes took CPU seconds (all threads of a task together): a task's wall time is those
    # over its threads, stretched by what shares the cores; a GPU's were timed in wall time
    factor = slowdown(workers, threads, idle, cores) / threads if device.type == "cpu" else 1.0
    return Plan(work, speeds, makespan(params, points, work, speeds, workers) * factor, factor)
