"""``benchmark``: the grid of params.yaml, then the report (table, figures, summary).

    python -m flows.benchmark            # what `make run` runs
"""

from __future__ import annotations

import argparse
import sys
import time

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from psaq.cli import run_entry
from flows.grid import grid_points, preflight, run_points, task_runner, tracked
from flows.points import load_checkpoint_stage, model_dict, share_cores
from tasks.artifacts import Artifact, refreshing_if_missing
from tasks.params import Params, load_params
from tasks.report import build_report
from tasks.settings import code_version, project_root
from tasks.tracking import log_point, tracking_uri


@flow(name="benchmark", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
def benchmark(params_path: str = "params.yaml") -> dict:
    params = share_cores(load_params(params_path))
    with tracked(params, "benchmark") as parent:
        records = run_points(params, grid_points(params), parent)
        report = make_report(params, records)
        if parent:
            files = [report["markdown"].path, report["summary"].path, *report["figures"].values()]
            log_point(tracking_uri(params.tracking.mlflow_uri), parent, {}, None, files, finish=False)
    return {"records": records, "table": report["table"], "report": report["markdown"].path,
            "figures": report["figures"], "tracking_uri": tracking_uri(params.tracking.mlflow_uri)}


def make_report(params: Params, records: list[dict]) -> dict:
    """The report of the first trained model: one sample set per calibration mode for the figures."""
    seed0 = params.grid.train_seeds[0]
    samples: dict[str, Artifact] = {}
    for r in records:
        if r["train_seed"] == seed0 and r["method"] not in samples:
            samples[r["method"]] = Artifact.of(r["samples"])
    out = str(project_root() / "reports" / "benchmark.md")
    return refreshing_if_missing(build_report, out)(
        model=model_dict(params, seed0), checkpoint=load_checkpoint_stage(params, seed0), records=records,
        samples=samples, runtime=params.to_dict()["runtime"], out=out, code=code_version())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dask", action="store_true", help="run grid points on a local Dask cluster")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)
    return run_entry(lambda: _run(args), args.debug)


def _run(args) -> int:
    started = time.perf_counter()
    params = load_params(args.params)
    preflight(params)
    result = benchmark.with_options(task_runner=task_runner(params, args.dask))(args.params)
    print("\n" + result["table"] + "\n")
    print(f"report:   {result['report']}")
    print(f"figures:  {', '.join(result['figures'].values())}")
    print(f"MLflow:   {result['tracking_uri']}  (browse: make mlflow-ui → http://127.0.0.1:5000)")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
