"""``benchmark``: the grid of a params file, then its report (table, intervals, figures, summary).

    python -m flows.benchmark                          # params.yaml: what `make run` runs
    python -m flows.benchmark --params benchmarks/fashion-vit.yaml --params benchmarks/fashion-swin.yaml
                                                       # the Fashion-MNIST benchmark: what `make benchmark` runs

Each params file's report goes to ``reports/<model>/`` (benchmark.md, summary.json, figures).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from prefect import flow
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.entry import prefect_server, run_entry
from flows.grid import preflight, run_points, share_cores, task_runner, tracked
from flows.one_at_a_time import one_at_a_time
from flows.outcome import grid_summary, one_line_failures, publish_artifact
from psaq import cancel
from psaq.cli import ArgumentParser
from psaq.params import Params, load_params
from psaq.pipeline import grid_points, report_inputs, resolve
from psaq.stages.report import publish_view
from tasks import stages
from tasks.settings import project_root
from tasks.tracking import attach, runs_page, tracking_uri


@flow(name="benchmark", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
@one_line_failures
@one_at_a_time
def benchmark(params_path: str = "params.yaml", allow_large_grid: bool = False) -> dict:
    """A params file's grid and its report; the report goes to reports/, MLflow and Prefect.

    Args:
        params_path: Settings file with the grid, relative to the project
            (benchmarks/fashion-vit.yaml, benchmarks/fashion-swin.yaml, params.yaml).
        allow_large_grid: Run a grid of more than 500 points.
    """
    params = share_cores(load_params(params_path))
    points = grid_points(params, allow_large_grid)
    with tracked(params, "benchmark") as parent:
        records, jobs = run_points(params, points, parent)
        report = resolve(stages.submit("report", **report_inputs(params, jobs, records),
                                       title=f"psaq benchmark: {params.model.name}"))
        files = publish_view(report, project_root() / "reports" / params.model.name)
        table = _table(files["benchmark.md"])
        if parent:
            attach(tracking_uri(params.tracking.mlflow_uri), parent, [str(p) for p in files.values()],
                   tags={"psaq.report": report.path})
    publish_artifact("benchmark", params.model.name, f"{table}\n\nFull report: `{report.path}`",
                     f"psaq benchmark {params.model.name}: top-1 per calibration mode and bit setting")
    result = {"records": records, "table": table, "report": str(files["benchmark.md"]),
              "report_artifact": report.path, "figures": {k: str(v) for k, v in files.items() if k.endswith(".png")},
              "tracking_uri": tracking_uri(params.tracking.mlflow_uri),
              "runs_page": runs_page(tracking_uri(params.tracking.mlflow_uri), params.tracking.experiment)
              if params.tracking.enabled else "tracking off"}
    return Completed(message=grid_summary(params.model.name, records, str(files["benchmark.md"])), data=result)


def _table(markdown: Path) -> str:
    """The report's first table (top-1), as printed at the end of a run."""
    lines = markdown.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def _record_run(files: list[str], estimated: float, wall: float) -> None:
    """What this run took against its estimate, for the README (``benchmarks/readme_tables.py``)."""
    import datetime
    import json
    import os

    out = project_root() / "reports" / "benchmark-run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"params": files, "estimated_cold_s": round(estimated), "wall_s": round(wall),
                               "cpus": len(os.sched_getaffinity(0)),
                               "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
                              indent=2) + "\n")


def print_plan(all_params: list[Params], allow_large_grid: bool) -> float:
    """The work of every params file and the cold time it takes here, from stage speeds measured
    now on each grid's architecture (a few seconds each); returns the estimate in seconds."""
    from psaq.allocator import keep_freed_memory
    from psaq.budget import estimate, measure, minutes, work_of
    from psaq.device import resolve_device

    keep_freed_memory(all_params[0].runtime.keep_freed_memory)  # the stages' setting, so the speeds are theirs
    print("plan (cold, on an empty store; what the store holds is reused):")
    total = 0.0
    for params in all_params:
        work = work_of(params, grid_points(params, allow_large_grid))
        stages = estimate(work, measure(params, work, resolve_device(params.runtime.device)))
        total += sum(stages.values())
        for line in work.lines():
            print(f"  {line}")
        print("    estimate: " + ", ".join(f"{k} {minutes(v)}" for k, v in stages.items()))
    print(f"  estimated cold time: {minutes(total)} (stage speeds measured here just now)\n", flush=True)
    return total


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", action="append", help="params file, repeatable (default: params.yaml)")
    ap.add_argument("--dask", action="store_true", help="run grid points on a local Dask cluster")
    ap.add_argument("--allow-large-grid", action="store_true", help="run a grid of more than 500 points")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    def run() -> int:
        started = time.perf_counter()
        files = args.params or ["params.yaml"]
        all_params = [load_params(f) for f in files]
        for params in all_params:  # every file is checked before any work
            preflight(params, args.allow_large_grid)
        estimated = print_plan(all_params, args.allow_large_grid)
        with prefect_server():
            for path, params in zip(files, all_params):
                result = benchmark.with_options(task_runner=task_runner(params, args.dask))(path, args.allow_large_grid)
                print(f"\n{params.model.name} ({path}):\n\n" + result["table"] + "\n")
                print(f"report:   {result['report']}  (this run's: {result['report_artifact']})")
                print(f"figures:  {', '.join(result['figures'].values())}")
            cancel.work_done()  # every run recorded FINISHED: a later signal is not an interruption
        print(f"MLflow:   {result['tracking_uri']}  (browse: make mlflow-ui → {result['runs_page']})")
        wall = time.perf_counter() - started
        print(f"done in {wall:.0f} s (estimated cold time: {estimated:.0f} s)")
        _record_run(files, estimated, wall)
        return 0

    return run_entry(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
