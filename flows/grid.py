"""``grid``: the cross product of params.yaml's grid, grid points run concurrently.

    python -m flows.grid                       # threads, grid.max_concurrency at a time
    python -m flows.grid --dask                # a 2-worker Dask LocalCluster on 127.0.0.1
    python -m flows.grid --dask-address tcp://127.0.0.1:8786   # an existing scheduler
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from prefect import flow
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner
from flows.entry import RUN_LOG, console, prefect_server, run_entry
from flows.one_at_a_time import one_at_a_time
from flows.outcome import grid_summary, one_line_failures
from flows.progress import GridProgress
from psaq import cancel
from psaq.allocator import keep_freed_memory
from psaq.cli import ArgumentParser
from psaq.cores import choose_threads
from psaq.params import Params, load_params
from psaq.pipeline import Point, grid_points, record, refuse_label_needs, submit_points
from tasks import stages
from psaq.models.loader import require_known
from tasks.services import check_mlflow, check_prefect, check_sources
from tasks.tracking import REUSED_TAG, attach, log_point, parent_run, tracking_uri


def run_points(params: Params, points: list[Point], parent: str | None) -> tuple[list[dict], list[dict], list]:
    """Submit every stage of every point, then gather the records and log each point to MLflow
    once; returns (records, jobs, each record's MLflow run id or None)."""
    stages.set_threads(params.runtime.threads)
    keep_freed_memory(params.runtime.keep_freed_memory)
    progress = GridProgress(params.model.name, f"{params.model.name} grid ({len(points)} points)")

    def submit(stage: str, **inputs):
        future = stages.submit(stage, **inputs)
        progress.track(stage, getattr(inputs.get("synth"), "method", None), future)
        return future

    try:
        jobs = submit_points(submit, params, points)
        records, runs, reused = [], [], []
        for job in jobs:
            rec = record(job)
            records.append(rec)
            run_id = None
            if parent:
                run_id, was_logged = log_nested(params, parent, job["point"], rec)
                if was_logged:
                    reused.append(run_id)
            runs.append(run_id)
    finally:
        progress.close()
    if parent and reused:
        attach(tracking_uri(params.tracking.mlflow_uri), parent, [], tags={REUSED_TAG: ",".join(reused)})
    return records, jobs, runs


def point_params(params: Params, point: Point) -> dict:
    """What a grid point ran, ``section.key`` flat: the model, the synthesis and quant configs."""
    from psaq.pipeline import model_config, quant_config, synthesis_config

    return {"model": dataclasses.asdict(model_config(params, point.train_seed)),
            "synthesis": dataclasses.asdict(synthesis_config(params, point)),
            "quant": dataclasses.asdict(quant_config(params, point)), "reconstruct": dataclasses.asdict(params.reconstruct),
            "adaptive": dataclasses.asdict(params.adaptive),
            "eval": dataclasses.asdict(params.eval), "point": {"bits": point.bits, "observer": point.observer}}


def log_nested(params: Params, parent: str, point: Point, rec: dict, log=log_point) -> tuple[str, bool]:
    """(run id, logged before) of the point's nested run. ``log``: the Prefect task, or its
    function (``log_point.fn``) where no flow runs (the DVC report stage)."""
    from psaq.io import read_samples
    from psaq.stages.reconstruct import ADAPTIVE_PREFIX, history as reconstruct_history

    history = {f"synthesis.{k}": v for k, v in read_samples(rec["samples"]).metadata.get("history", {}).items()}
    for k, v in reconstruct_history(rec["quantized"]).items():  # V2's rounds (adaptive.…) and the block losses
        if not k.endswith("wall_s"):
            history[k if k.startswith(ADAPTIVE_PREFIX) else f"reconstruct.loss.{k}"] = v
    files = {"metrics.json": rec["metrics"]}
    if params.tracking.artifacts:
        files |= {name: rec[key] for key, name in (("quantized", "quantized.safetensors"),
                                                   ("integer", "integer.safetensors"), ("onnx", "model.onnx")) if rec[key]}
    return log(tracking_uri(params.tracking.mlflow_uri), params.tracking.experiment, parent,
               f"{params.model.name} {point.name}", point_params(params, point), rec, history, files)


def grid_description(params: Params) -> dict:
    """The parent run's params: the grid it ran and the settings every point shares."""
    shared = params.to_dict()
    for section, keys in (("synthesis", ("method", "seed")), ("quant", ("w_bits", "a_bits", "act_observer")),
                          ("model", ("train_seed",))):
        for key in keys:
            shared[section].pop(key, None)
    shared.pop("tracking", None)
    return shared


def tracked(params: Params, name: str):
    """The MLflow parent run of a flow run (a no-op when tracking is disabled)."""
    return parent_run(params.tracking.enabled, tracking_uri(params.tracking.mlflow_uri), params.tracking.experiment,
                      name, grid_description(params), tags={"psaq.flow": name})


@flow(name="grid", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
@one_line_failures
@one_at_a_time
def grid(params_path: str = "params.yaml", threads: int | None = None, allow_large_grid: bool = False) -> list[dict]:
    """Run every (train seed × method × seed × bits × observer) point of a params file's grid.

    Args:
        params_path: Settings file with the grid, relative to the project.
        threads: Torch threads per task; empty: each concurrent task gets its share of the idle
            cores (1 on Dask workers, which each hold a core).
        allow_large_grid: Run a grid of more than 500 points.
    """
    params = share_cores(with_threads(load_params(params_path), threads))
    points = grid_points(params, allow_large_grid)
    with tracked(params, "grid") as parent:
        records, _, _ = run_points(params, points, parent)
    print(f"grid: {len(records)} points done")
    return Completed(message=grid_summary(params.model.name, records), data=records)


def with_threads(params: Params, threads: int | None) -> Params:
    if threads is None:
        return params
    return dataclasses.replace(params, runtime=dataclasses.replace(params.runtime, threads=threads))


def share_cores(params: Params) -> Params:
    """With ``runtime.threads: null``, give each of the ``max_concurrency`` concurrent tasks an
    equal share of the cores that other work leaves idle: oversubscribed torch threads run
    slower than fewer threads each (``psaq.cores``)."""
    if params.runtime.threads:
        return params
    threads = max(1, choose_threads(None).count // params.grid.max_concurrency)
    return with_threads(params, threads)


def task_runner(params: Params, dask: bool = False, dask_address: str | None = None):
    """Threads by default; a Dask LocalCluster (dashboard on 127.0.0.1) or an existing scheduler."""
    if not (dask or dask_address):
        return ThreadPoolTaskRunner(max_workers=params.grid.max_concurrency)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": params.grid.max_concurrency, "threads_per_worker": 1,
                                          "processes": True, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"})


def preflight(params: Params, allow_large_grid: bool = False, points: list[Point] | None = None) -> None:
    """Refuse bad input and unreachable services before any work starts: the grid's size, the
    calibration modes a headless backbone cannot take, the data folders, the MLflow store and the
    Prefect server. ``points``: what the run will run (default: the grid's)."""
    grid = grid_points(params, allow_large_grid)
    refuse_label_needs(params, grid if points is None else points)
    require_known(params.model.name)
    check_sources(params)
    check_prefect()
    if params.tracking.enabled:
        check_mlflow(tracking_uri(params.tracking.mlflow_uri))


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dask", action="store_true", help="run grid points on a local Dask cluster")
    ap.add_argument("--dask-address", help="address of an existing Dask scheduler")
    ap.add_argument("--allow-large-grid", action="store_true", help="run a grid of more than 500 points")
    ap.add_argument("--verbose", action="store_true",
                    help=f"print Prefect's log line of every task run too (otherwise they go to {RUN_LOG})")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    def run() -> int:
        params = load_params(args.params)
        preflight(params, args.allow_large_grid)
        use_dask = bool(args.dask or args.dask_address)
        with console(args.verbose), prefect_server():
            records = grid.with_options(task_runner=task_runner(params, args.dask, args.dask_address))(
                args.params, threads=1 if use_dask else None, allow_large_grid=args.allow_large_grid)
            cancel.work_done()  # recorded FINISHED: a signal while the server stops is not an interruption
        for r in records:
            print(f"{r['method']:>16} seed {r['seed']} {r['bits']} {r['observer']}: top-1 {r['top1']:.2f}")
        return 0

    return run_entry(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
