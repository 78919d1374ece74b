"""``grid``: the cross product of params.yaml's grid, grid points run concurrently.

    python -m flows.grid                       # threads, grid.max_concurrency at a time
    python -m flows.grid --dask                # a 2-worker Dask LocalCluster on 127.0.0.1
    python -m flows.grid --dask-address tcp://127.0.0.1:8786   # an existing scheduler
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.points import Point, load_checkpoint_stage, share_cores, submit_fp32, submit_point
from psaq.cli import run_entry
from psaq.io import read_samples
from tasks.params import Params, load_params
from tasks.services import check_mlflow, check_prefect
from tasks.settings import code_version
from tasks.tracking import log_point, parent_run, start_run, tracking_uri


def grid_points(params: Params) -> list[Point]:
    g = params.grid
    return [Point(*p) for p in itertools.product(g.train_seeds, g.methods, g.seeds, g.bits, g.observers)]


def run_points(params: Params, points: list[Point], parent: str | None) -> list[dict]:
    """Submit every point, then gather its metrics and log it as a nested MLflow run of ``parent``."""
    checkpoints = {s: load_checkpoint_stage(params, s) for s in sorted({p.train_seed for p in points})}
    fp32 = {s: submit_fp32(params, s, ckpt) for s, ckpt in checkpoints.items()}
    samples_cache: dict = {}
    submitted = [submit_point(params, p, checkpoints[p.train_seed], fp32[p.train_seed], samples_cache) for p in points]
    records = []
    for job in submitted:
        # upstream first: a failed stage raises its own error, not "downstream never ran"
        samples, quantized = job["samples"].result(), job["quantized"].result()
        result, exported = job["metrics"].result(), job["exported"].result()
        meta = read_samples(samples.verify()).metadata
        record = {**dataclasses.asdict(job["point"]), **result["metrics"], "synthesis_wall_s": meta.get("wall_s"),
                  "steps_per_s": meta.get("steps_per_s"), "samples": job["samples_path"]}
        records.append(record)
        if parent:
            files = [result["artifact"].path, quantized.path, exported["integer"].path, exported["onnx"].path]
            log_nested(params, parent, job, record, meta.get("history", {}), files)
    return records


def log_nested(params: Params, parent: str, job: dict, record: dict, history: dict, files: list[str]) -> None:
    uri, point = tracking_uri(params.tracking.mlflow_uri), job["point"]
    run_id = start_run(uri, params.tracking.experiment, point.name, job["config"], parent_id=parent,
                       tags={"psaq.method": point.method, "psaq.bits": point.bits})
    metrics = {k: record[k] for k in ("top1", "top5", "agreement", "fp32_top1", "synthesis_wall_s", "steps_per_s")}
    log_point(uri, run_id, metrics, {f"synthesis_{k}": v for k, v in history.items()}, files)


def with_threads(params: Params, threads: int | None) -> Params:
    if threads is None:
        return params
    return dataclasses.replace(params, runtime=dataclasses.replace(params.runtime, threads=threads))


def tracked(params: Params, name: str):
    """The MLflow parent run of a flow run (a no-op when tracking is disabled)."""
    return parent_run(params.tracking.enabled, tracking_uri(params.tracking.mlflow_uri), params.tracking.experiment,
                      name, params.to_dict(), tags={"psaq.code_version": code_version()})


@flow(name="grid", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def grid(params_path: str = "params.yaml", threads: int | None = None) -> list[dict]:
    """Run every (train seed × method × seed × bits × observer) point of params.yaml's grid.
    ``threads``: torch threads per task (1 on Dask workers, which each hold a core)."""
    params = share_cores(with_threads(load_params(params_path), threads))
    with tracked(params, "grid") as parent:
        records = run_points(params, grid_points(params), parent)
    print(f"grid: {len(records)} points done")
    return records


def task_runner(params: Params, dask: bool = False, dask_address: str | None = None):
    """Threads by default; a Dask LocalCluster (dashboard on 127.0.0.1) or an existing scheduler."""
    if not (dask or dask_address):
        return ThreadPoolTaskRunner(max_workers=params.grid.max_concurrency)
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": params.grid.max_concurrency, "threads_per_worker": 1,
                                          "processes": True, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"})


def preflight(params: Params) -> None:
    """Refuse unreachable services before any work starts."""
    check_prefect()
    if params.tracking.enabled:
        check_mlflow(tracking_uri(params.tracking.mlflow_uri))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dask", action="store_true", help="run grid points on a local Dask cluster")
    ap.add_argument("--dask-address", help="address of an existing Dask scheduler")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    def run() -> int:
        params = load_params(args.params)
        preflight(params)
        use_dask = bool(args.dask or args.dask_address)
        records = grid.with_options(task_runner=task_runner(params, args.dask, args.dask_address))(
            args.params, threads=1 if use_dask else None)
        for r in records:
            print(f"{r['method']:>16} seed {r['seed']} {r['bits']} {r['observer']}: top-1 {r['top1']:.2f}")
        return 0

    return run_entry(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
