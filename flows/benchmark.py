"""``benchmark``: the grid of a params file, then its report (table, intervals, figures, summary).

    python -m flows.benchmark                          # params.yaml: what `make run` runs
    python -m flows.benchmark --params benchmarks/fashion-vit.yaml --params benchmarks/fashion-swin.yaml
                                                       # the Fashion-MNIST benchmark: what `make benchmark` runs

Each params file's report goes to ``reports/<model>/`` (benchmark.md, summary.json, figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from prefect import flow
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.entry import RUN_LOG, console, prefect_server, run_entry
from flows.grid import preflight, run_points, share_cores, task_runner, tracked
from flows.one_at_a_time import one_at_a_time
from flows.outcome import grid_summary, one_line_failures, publish_artifact
from flows.progress import expect
from psaq import cancel
from psaq.cli import ArgumentParser
from psaq.params import Params, load_params
from psaq.pipeline import grid_points, report_inputs, resolve
from psaq.stages.report import publish_view
from tasks import stages
from tasks.baseline import baselines
from tasks.settings import project_root
from tasks.tracking import attach, log_report, runs_page, tracking_uri


@flow(name="benchmark", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=2))
@one_line_failures
@one_at_a_time
def benchmark(params_path: str = "params.yaml", allow_large_grid: bool = False, compare: bool = True,
              recheck: bool = False) -> dict:
    """A params file's grid and its report; the report goes to reports/, MLflow and Prefect.

    Args:
        params_path: Settings file with the grid, relative to the project
            (benchmarks/fashion-vit.yaml, benchmarks/fashion-swin.yaml, params.yaml).
        allow_large_grid: Run a grid of more than 500 points.
        compare: Compare the results with the last committed ones (else the previous run's) and
            flag figures that left their intervals (reports/<model>/changes.md).
        recheck: Evaluate every point again under today's code and libraries, even when the
            store holds its result, and say which differ (reports/<model>/recheck.json).
    """
    params = share_cores(load_params(params_path))
    points = grid_points(params, allow_large_grid)
    folder = project_root() / "reports" / params.model.name
    before = baselines(folder) if compare else []  # read before this run's report replaces them
    with tracked(params, "benchmark") as parent:
        records, jobs, runs = run_points(params, points, parent)
        report = resolve(stages.submit("report", **report_inputs(params, jobs, records), title=report_title(params)))
        files = publish_view(report, folder)
        table = headline_of(files)
        changes = compare_with(before, files, params.model.name) if compare else None
        rechecked = recheck_points(params, points, folder) if recheck else None
        registered = []
        if parent:
            uri = tracking_uri(params.tracking.mlflow_uri)
            registered = log_report(uri, parent, files, table, records, runs, params.model.name,
                                    params.tracking.register)
            attach(uri, parent, [str(folder / "changes.md")] if changes else [],
                   tags={"psaq.report": report.path, **({"psaq.changes": changes["line"]} if changes else {})},
                   metrics={"changes.flagged": changes["flagged"], "changes.moved": changes["moved"]} if changes else {})
            if rechecked:
                attach(uri, parent, [str(folder / "recheck.json")], tags={"psaq.recheck": rechecked["line"]},
                       metrics={"recheck.differ": rechecked["differ"]})
    page = runs_page(tracking_uri(params.tracking.mlflow_uri), params.tracking.experiment) \
        if params.tracking.enabled else None
    said = "; ".join(x["line"] for x in (changes, rechecked) if x) or None
    links = [f"- Report: [{files['benchmark.md']}]({files['benchmark.md'].as_uri()}) (this run's: `{report.path}`)",
             *([f"- Against earlier results: {said} ([changes.md]({(folder / 'changes.md').as_uri()}))"] if said else []),
             *([f"- MLflow: [the runs table]({page}) (`make mlflow-ui` serves it), parent run `{parent}`"] if page else []),
             *[f"- Model Registry: {line}" for line in registered]]
    publish_artifact("benchmark", params.model.name, table + "\n\n" + "\n".join(links),
                     f"psaq benchmark {params.model.name}: what psaq's images change, top-1, links")
    result = {"records": records, "table": table, "changes": said, "report": str(files["benchmark.md"]),
              "report_artifact": report.path, "figures": {k: str(v) for k, v in files.items() if k.endswith(".png")},
              "tracking_uri": tracking_uri(params.tracking.mlflow_uri), "runs_page": page or "tracking off",
              "registered": registered}
    return Completed(message=grid_summary(params.model.name, records, str(files["benchmark.md"])), data=result)


def compare_with(before: list, files: dict[str, Path], model: str, artifact: bool = True) -> dict | None:
    """This run's figures against the first baseline that shares figures with it: writes
    changes.md and changes.json beside the report and a Prefect artifact; None without one."""
    from psaq.drift import compare, summary_line, table

    now = tuple(json.loads(files[name].read_text()) for name in ("accuracy.json", "differences.json"))
    folder = files["accuracy.json"].parent
    for label, rows in before:
        result = compare(rows, now)
        if result["rows"]:
            break
    else:
        for name in ("changes.md", "changes.json"):  # an earlier run's comparison is not this run's
            (folder / name).unlink(missing_ok=True)
        return None
    line = summary_line(result, label)
    (folder / "changes.json").write_text(json.dumps({**result, "against": label}, indent=1) + "\n")
    (folder / "changes.md").write_text(f"# {model}: this run against {label}\n\n{line}\n\n{table(result)}\n")
    if artifact:
        publish_artifact("changes", model, f"{line}\n\n{table(result)}", f"psaq {model}: results against {label}")
    return {"line": line, "flagged": result["flagged"], "moved": result["moved"]}


def recheck_points(params: Params, points, folder: Path) -> dict:
    """Every point evaluated again (``psaq.recheck``): recheck.json, a Prefect artifact, one line."""
    import torch

    from psaq import recheck
    from tasks.settings import store

    torch.set_num_threads(params.runtime.threads * params.grid.max_concurrency)  # one evaluation at a time: all cores
    result = recheck.recheck(params, points, store(), progress=False)
    recheck.write(result, folder)
    line = recheck.summary_line(result)
    env = ", ".join(f"{k} {v}" for k, v in result["environment"].items())
    publish_artifact("recheck", params.model.name, f"{line}\n\nEnvironment: {env}",
                     f"psaq {params.model.name}: stored results evaluated again")
    return {"line": line, "differ": result["differ"]}


def report_title(params: Params) -> str:
    return f"psaq benchmark: {params.model.name}"


def headline_of(files: dict[str, Path]) -> str:
    """What a run prints first: the paired differences, a paragraph per setting, top-1 per method."""
    from psaq.report import headline
    from psaq.stages.report import setting_notes

    summary = json.loads(files["summary.json"].read_text())
    return headline(summary, setting_notes(summary["columns"]))


def stored_report(params: Params, allow_large_grid: bool) -> dict | None:
    """The report of a grid whose every stage the store already holds, verified, and copied to
    reports/; None when anything is missing. No Prefect server, no task: seconds, not a minute."""
    from psaq.pipeline import inline_runner, record, submit_points
    from psaq.store import NotInStore, Store

    submit = inline_runner(Store(project_root(), read_only=True), progress=False)
    try:
        jobs = submit_points(submit, params, grid_points(params, allow_large_grid), progress=False)
        records = [record(job) for job in jobs]
        report = resolve(submit("report", **report_inputs(params, jobs, records), title=report_title(params)))
    except NotInStore:
        return None
    folder = project_root() / "reports" / params.model.name
    before = baselines(folder)
    files = publish_view(report, folder)
    changes = compare_with(before, files, params.model.name, artifact=False)
    return {**files, "changes": changes["line"] if changes else None}


def _record_run(files: list[str], estimated: float, wall: float) -> None:
    """What this run took against its estimate, for the README (``benchmarks/readme_tables.py``)."""
    import datetime
    import os

    out = project_root() / "reports" / "benchmark-run.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"params": files, "estimated_cold_s": round(estimated), "wall_s": round(wall),
                               "cpus": len(os.sched_getaffinity(0)),
                               "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
                              indent=2) + "\n")


def print_plan(all_params: list[Params], allow_large_grid: bool, idle: float | None = None) -> float:
    """The work of every params file and the cold time it takes here, from stage speeds measured
    now on each grid's architecture (a few seconds each); returns seconds."""
    from psaq.allocator import keep_freed_memory
    from psaq.budget import SERVER_START_S, estimate, minutes, plan
    from psaq.cores import idle_cores, usable_cores

    keep_freed_memory(all_params[0].runtime.keep_freed_memory)  # the stages' setting, so the speeds are theirs
    cores = len(usable_cores())
    idle = idle if idle is not None else idle_cores()
    print("plan (cold, on an empty store; what the store holds is reused):")
    total = SERVER_START_S
    for params in all_params:
        params = share_cores(params)  # the threads each task will run with
        cost = plan(params, grid_points(params, allow_large_grid), idle, cores)
        expect(params.model.name, cost.task_seconds)  # the progress bar's weights
        total += cost.wall_s
        for line in cost.work.lines():
            print(f"  {line}")
        work_s = ", ".join(f"{k} {minutes(v)}" for k, v in estimate(cost.work, cost.speeds).items())
        print(f"    work: {work_s} (CPU time); on {params.grid.max_concurrency} workers × {params.runtime.threads} "
              f"thread(s): {minutes(cost.wall_s)}")
    busy = f", {cores - idle:.1f} held by other work now" if idle is not None and cores - idle > 0.3 else ""
    print(f"  estimated cold time: {minutes(total)} ({cores} cores{busy}; stage speeds measured here just now)\n",
          flush=True)
    return total


def main(argv: list[str] | None = None) -> int:
    from psaq.cores import idle_cores

    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", action="append", help="params file, repeatable (default: params.yaml)")
    ap.add_argument("--dask", action="store_true", help="run grid points on a local Dask cluster")
    ap.add_argument("--allow-large-grid", action="store_true", help="run a grid of more than 500 points")
    ap.add_argument("--rerun-flow", action="store_true",
                    help="run the Prefect flow (a flow run, an MLflow parent run) even when the store holds every "
                         "result; without it such a run prints the stored results in seconds")
    ap.add_argument("--recheck", action="store_true",
                    help="evaluate every point again under today's code and libraries (stored results included) "
                         "and say which differ: what the scheduled deployments do")
    ap.add_argument("--verbose", action="store_true",
                    help=f"print Prefect's log line of every task run too (otherwise they go to {RUN_LOG})")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    def run() -> int:
        started = time.perf_counter()
        files = args.params or ["params.yaml"]
        all_params = [load_params(f) for f in files]
        for params in all_params:  # every file is checked before any work
            preflight(params, args.allow_large_grid)
        with console(args.verbose) as log:
            stored = None if args.rerun_flow or args.recheck else [stored_report(p, args.allow_large_grid) for p in all_params]
            if stored and all(stored):
                for path, params, views in zip(files, all_params, stored):
                    _print_result(path, params, headline_of(views), views["benchmark.md"], views,
                                  changes=views["changes"])
                print(f"every stage's result was already in the store (each file re-hashed before use): nothing to "
                      f"compute, no flow run; --rerun-flow runs and logs it again. Done in "
                      f"{time.perf_counter() - started:.1f} s")
                return 0
            idle = idle_cores()  # before the server starts: its start-up is not other work
            with prefect_server(wait=False) as ready:  # starts while the plan measures speeds
                estimated = print_plan(all_params, args.allow_large_grid, idle)
                ready()
                for path, params in zip(files, all_params):
                    result = benchmark.with_options(task_runner=task_runner(params, args.dask))(
                        path, args.allow_large_grid, recheck=args.recheck)
                    _print_result(path, params, result["table"], result["report"], result["figures"],
                                  result["report_artifact"], result["changes"])
                cancel.work_done()  # every run recorded FINISHED: a later signal is not an interruption
        print(f"MLflow:   {result['tracking_uri']}  (browse: make mlflow-ui → {result['runs_page']})")
        for line in result["registered"]:
            print(f"model registry: {line}")
        print(f"log:      {log} (every task run's lines; --verbose prints them here)")
        wall = time.perf_counter() - started
        print(f"done in {wall:.0f} s (estimated cold time: {estimated:.0f} s)")
        _record_run(files, estimated, wall)
        return 0

    return run_entry(run, args.debug)


def _print_result(path: str, params: Params, headline: str, report, figures: dict, artifact: str | None = None,
                  changes: str | None = None) -> None:
    print(f"\n{params.model.name} ({path}):\n\n{headline}\n")
    print(f"report:   {report}" + (f"  (this run's: {artifact})" if artifact else ""))
    if changes:
        print(f"changes:  {changes} ({Path(report).parent / 'changes.md'})")
    print(f"figures:  {', '.join(str(v) for k, v in figures.items() if str(k).endswith('.png'))}")


if __name__ == "__main__":
    sys.exit(main())
