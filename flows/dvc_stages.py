"""The stage graph as plain commands, for ``dvc repro`` (``dvc.yaml`` is generated from the graph).

Each command runs one stage of one grid point with the same function, key and store as the
Prefect flows and the command line, then points the stage's fixed DVC path (its view) at the
artifact. Upstream inputs are read from the upstream stages' views.

    python -m flows.dvc_stages code                  # each stage's code fingerprint (what DVC compares)
    python -m flows.dvc_stages data
    python -m flows.dvc_stages model --train-seed 0
    python -m flows.dvc_stages samples --train-seed 0 --method psaq --seed 0
    python -m flows.dvc_stages evaluate --train-seed 0 --method psaq --seed 0 --bits W4A8 --observer minmax
    python -m flows.dvc_stages report
    python -m flows.dvc_stages sync                  # record in dvc.lock what the store already holds
    python -m flows.dvc_stages write-dvc-yaml        # regenerate dvc.yaml from the graph
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import re
import subprocess
import sys
from pathlib import Path

from psaq.cli import ArgumentParser, run_entry
from psaq.allocator import keep_freed_memory
from psaq.cores import use_threads
from psaq.errors import ArtifactError, ConfigError
from psaq.io import read_json, write_json
from psaq.params import Params, load_params
from psaq.pipeline import (GRID_STAGES, Inline, Point, grid_points, reads_outside, record, report_inputs, run_stage,
                           settings, uses_store)
from psaq.stages import report
from psaq.stages.graph import GRAPH, POINT_STEM, producer
from psaq.stages.common import Weights
from psaq.codehash import plugin_files, source_hash
from psaq.content import file_sha256
from psaq.store import Artifact, NotInStore, Store
from psaq.synth.methods import SYNTH_METHODS


def view(stage: str, index: int = 0, **item) -> Path:
    return Path(GRAPH[stage].views[index].format(**item))


# What `dvc metrics show` lists: per stage that measures (kind "metrics"), a small file of the
# figures users compare, beside the full metrics view (whose per-image correctness bits are a
# 2,500-character hex string, and whose report summary nests every comparison: one terminal line
# per point).
SCORES = {"fp32": ("pipeline/scores/fp32/m{train_seed}.json", ("top1", "top5")),
          "evaluate": (f"pipeline/scores/{POINT_STEM}.json", ("top1", "top5", "agreement", "fp32_top1"))}


def _write_scores(stage: str, artifact: Artifact, **item) -> None:
    path, keys = SCORES[stage]
    metrics = read_json(artifact.path)
    write_json(Path(path.format(**item)), {k: round(float(metrics[k]), 4) for k in keys if k in metrics})


def _upstream(stage: str, path: Path) -> Path:
    if not path.is_file():
        raise ArtifactError(f"stage '{stage}' has not run ({path} is missing): run `dvc repro`, which runs the "
                            "stages in order")
    return path


def read_view(stage: str, index: int = 0, **item) -> Artifact:
    """An upstream stage's output through its view, checked against what the store published:
    a view is a hard link into the store, so a view edited in place would feed the edit on. (A
    stage that is switched off hands its input on, so any stage's folder may hold it.)"""
    path = _upstream(stage, view(stage, index, **item))
    artifact = Artifact(str(path), file_sha256(path))
    store = Store(".")
    if not any(store.published_with(folder, artifact.sha256) for folder in dict.fromkeys(s.folder for s in GRAPH.values())):
        raise ArtifactError(f"'{path}' is not what stage '{stage}' published (its content matches no artifact in the "
                            f"store: edited in place?); delete it and run `dvc repro` to rebuild it")
    return artifact


def _point(args) -> Point:
    if args.method is not None:
        SYNTH_METHODS.get(args.method)  # an unknown name is refused before anything is read
    if args.bits is None:  # a stage with no bits in its matrix (samples) reads neither bits nor sites
        return Point(args.train_seed, args.method, args.seed, 0, 0, args.observer or "")
    return Point.parse(args.train_seed, args.method, args.seed, args.bits, args.observer or "")


def read_output(stage: str, point: Point):
    """An upstream stage's output for this point, as the stage's function returned it, from its view."""
    item = GRAPH[stage].coords(point)
    if not uses_store(stage):  # a record of what it read (the data's fingerprints)
        return read_json(_upstream(stage, view(stage, **item)))
    if stage == "model":  # where the weights are and their hash
        return Weights(**read_json(_upstream(stage, view(stage, **item))))
    return read_view(stage, **item)


def _publish(store: Store, artifact: Artifact, built: bool, stage: str, index: int = 0, **item) -> None:
    store.link_view(artifact, view(stage, index, **item))
    print(f"{stage}: {'built' if built else 'reused'} {artifact.path}")


def _portable(weights: Weights) -> Weights:
    """Weights inside the project by their path from it: the view (and so dvc.lock, which records
    its hash) is then the same in every checkout; stage commands run in the project folder."""
    if weights.path:
        try:
            return dataclasses.replace(weights, path=Path(weights.path).resolve().relative_to(Path.cwd()).as_posix())
        except ValueError:
            pass  # a checkpoint or timm's cache outside the project: its own place
    return weights


def run_point_stage(name: str, params: Params, store: Store, args) -> None:
    """One stage for one item of its grid dimensions: the same settings and upstream outputs as the
    flows and the command line give it (``psaq.pipeline``), read from the upstream views; then its
    output is put where its view says."""
    stage, point = GRAPH[name], _point(args)
    item = stage.coords(point)
    upstream = {GRAPH[up].passes_as: read_output(up, point) for up in stage.needs}
    out, built = run_stage(name, store, **settings(name, params, point), **upstream)
    if isinstance(out, Artifact):
        _publish(store, out, built, name, **item)
        if name in SCORES:
            _write_scores(name, out, **item)
    elif isinstance(out, Weights):
        write_json(view(name, **item), dataclasses.asdict(_portable(out)))
        print(f"{name}: {'built' if built else 'reused'} {out.path or out.source}")
    elif out and all(isinstance(v, Artifact) for v in out.values()):  # several files, one view each, in order
        for index, artifact in enumerate(out.values()):
            _publish(store, artifact, built, name, index, **item)
    else:  # a record (the data's fingerprints)
        write_json(view(name, **item), out)


def run_report(params: Params, store: Store, args) -> None:
    jobs, records = [], []
    for p in grid_points(params, allow_large=True):
        read = ("model", "samples", producer("quantized"), "evaluate")  # what a record reads, by role
        job = {"point": p, **{stage: Inline(read_output(stage, p)) for stage in read},
               "export": Inline({"integer": read_view("export", 0, **p.coords), "onnx": read_view("export", 1, **p.coords)})}
        jobs.append(job)
        records.append(record(job))
    art, built = report.run(store, **report_inputs(params, jobs, records), title=f"psaq benchmark: {params.model.name}")
    folder = Path(view("report", model=params.model.name)).parent
    files = report.publish_view(art, folder)
    print(f"report: {'built' if built else 'reused'} {art.path} → {folder}/")
    if params.tracking.enabled and not store.read_only:  # sync only records what the store holds
        track(params, jobs, records, files)


def track(params: Params, jobs: list[dict], records: list[dict], files: dict[str, Path]) -> None:
    """The points `dvc repro` computed reach MLflow as the flows' do: a parent run "dvc repro"
    with its summary, a nested run per point not logged before (the rest are linked in the
    parent's points table), the best data-free models registered where params.yaml says so."""
    from flows.benchmark import headline_of
    from flows.grid import grid_description, log_nested
    from tasks.services import check_mlflow
    from tasks.tracking import log_point, log_report, parent_run, tracking_uri

    uri = tracking_uri(params.tracking.mlflow_uri)
    check_mlflow(uri)
    with parent_run(True, uri, params.tracking.experiment, "dvc repro", grid_description(params),
                    tags={"psaq.flow": "dvc repro"}) as parent:
        logged = [log_nested(params, parent, job["point"], rec, log=log_point.fn) for job, rec in zip(jobs, records)]
        runs = [run_id for run_id, _ in logged]
        registered = log_report.fn(uri, parent, files, headline_of(files), records, runs, params.model.name,
                                   params.tracking.register)
    new = sum(not reused for _, reused in logged)
    print(f"report: MLflow run 'dvc repro' ({parent}) with {len(runs)} points, {new} logged now; {uri}")
    for line in registered:
        print(f"report: model registry: {line}")


# --- sync: record what the store already holds, in one process ----------------------------------

def dvc_items(params: Params) -> list[tuple[str, argparse.Namespace]]:
    """Every stage of ``dvc.yaml`` for this grid, in graph order: (DVC's stage name, the stage
    command's arguments). DVC names a matrix stage ``stage@v1-v2-…`` in the matrix's key order."""
    points = grid_points(params, allow_large=True)
    items = [(CODE, argparse.Namespace())]
    for name, stage in GRAPH.items():
        for values in dict.fromkeys(tuple(getattr(p, k) for k in stage.matrix) for p in points):
            args = argparse.Namespace(**{"train_seed": 0, "method": None, "seed": None, "bits": None,
                                         "observer": None, **dict(zip(stage.matrix, values))})
            items.append((name + ("@" + "-".join(map(str, values)) if values else ""), args))
    return items


def locked_stages(lock: Path = Path("dvc.lock")) -> set[str]:
    """The stage names dvc.lock records (read as text: the file holds every dep's hash)."""
    if not lock.is_file():
        return set()
    return set(re.findall(r"^  (\S+):$", lock.read_text(), flags=re.M))


def dvc_reason(stdout: str, stderr: str, code: int) -> str:
    """DVC's own words for a failure: its ERROR lines (on stdout or stderr, by version), else its last line."""
    lines = [line.strip() for line in (stderr + "\n" + stdout).splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR")]
    return "; ".join(errors) or (lines[-1] if lines else f"exit status {code}, nothing printed")


def _dvc(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise ArtifactError(f"dvc {args[0]} failed ({dvc_reason(done.stdout, done.stderr, done.returncode)}); the "
                            "views are in place: `dvc repro` runs every stage")
    return done.stdout


def _lock_is_newest() -> bool:
    """dvc.lock written after every file the stages depend on: nothing to record. (Only a
    shortcut: if it is wrong, dvc repro still finds what changed and reruns it.)"""
    lock = Path("dvc.lock")
    if not lock.is_file():
        return False
    deps = {"params.yaml", "dvc.yaml", *CONFIG_FILES, *(f for s in GRAPH.values() for f in s.code_files())}
    newest = max(Path(d).stat().st_mtime for d in deps if Path(d).is_file())
    return newest <= lock.stat().st_mtime


def refresh_dvc_yaml(params: Params, path: Path = Path("dvc.yaml")) -> str | None:
    """Rewrite dvc.yaml where it is not what the graph and these params generate (params.yaml
    made a stage read files outside the project, or back); a line saying so, or None."""
    generated = dvc_yaml(params)
    if path.is_file() and path.read_text() == generated:
        return None
    path.write_text(generated)
    outside = reads_outside(params)
    return "sync: dvc.yaml regenerated" + ("; " + "; ".join(f"stage '{s}' reads {w}, so it runs on every repro"
                                                              for s, w in outside.items()) if outside else "")


def sync(params: Params, progress: bool = True) -> tuple[list[str], list[str]]:
    """Record in dvc.lock the stages whose artifacts the store already holds (all of them after
    ``make run``, or after an edit to code every stage depends on): point each view at its
    artifact, as the stage command would, but in one process, then ``dvc commit`` them, so that
    ``dvc repro`` reruns only what the store lacks instead of starting Python once per stage.
    Returns (the stages recorded, the stages dvc.lock lacked or held out of date)."""
    from tqdm.auto import tqdm

    refreshed = refresh_dvc_yaml(params)
    if refreshed:
        print(refreshed)
    items = dvc_items(params)
    locked = locked_stages()
    if all(name in locked for name, _ in items) and _lock_is_newest():
        return [], []
    store, found = Store(".", read_only=True), []  # finds each stage's artifact, or stops: builds nothing
    for name, args in tqdm(items, desc="sync with the store", unit="stage", disable=not progress, leave=False):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                POINT_STAGES[name.partition("@")[0]](params, store, args)
        except (NotInStore, ArtifactError):
            continue  # not built yet (or its upstream is not): dvc repro runs it
        found.append(name)
    if len(found) == len(items):
        # every view now shows what its stage would make: one pass commits them all (about 30 s
        # for the default grid; `dvc commit` resolves each named target on its own, ~4 s each)
        _dvc("commit", "--force", "--quiet")
        return found, [name for name, _ in items]
    stale = {name for name, _ in items if name not in locked}
    if locked:
        stale |= {line.strip().rstrip(":") for line in _dvc("status").splitlines()
                  if line.strip().endswith(":") and not line.startswith("\t")}
    targets = [name for name in found if name in stale]
    if targets:
        _dvc("commit", "--force", "--quiet", *targets)
    return targets, sorted(stale & {name for name, _ in items})


# --- code: what DVC compares instead of every stage's source files ------------------------------

CODE = "code"  # a DVC stage of its own, ahead of the graph
CODE_VIEW = "pipeline/code/{stage}.json"


def code_files(name: str) -> list[str]:
    """The files a stage's DVC command runs: its import closure, the code that turns params.yaml
    into its config and runs it, and every plug-in (family, dataset) file: a stage's store key
    holds only its own model's plug-ins, so after an edit to one family DVC reruns the stages
    and the store hands back the other families' results unchanged."""
    return list(dict.fromkeys([*GRAPH[name].code_files(), *CONFIG_FILES, *plugin_files()]))


def write_code_views(params: Params | None = None, store: Store | None = None, args=None) -> None:
    """One file per stage naming the code it runs, by hash: it changes exactly when that code
    does, so a stage depends on one file instead of its 30-odd sources (DVC checks 160 stages'
    dependencies on every repro: 12 s with the sources, a few with these)."""
    for name, stage in GRAPH.items():
        write_json(Path(CODE_VIEW.format(stage=name)),
                   {"stage": name, "code": stage.code, "files": {f: source_hash(f) for f in code_files(name)}})


POINT_STAGES = {CODE: write_code_views,
                **{name: functools.partial(run_point_stage, name) for name in GRAPH if name not in GRID_STAGES},
                "report": run_report}


# --- dvc.yaml, generated from the graph --------------------------------------------------------

MATRIX_SOURCES = {"train_seed": "${grid.train_seeds}", "method": "${grid.methods}", "seed": "${grid.seeds}",
                  "bits": "${grid.bits}", "observer": "${grid.observers}"}
HEADER = """\
# GENERATED from psaq.stages.graph.GRAPH by `python -m flows.dvc_stages write-dvc-yaml`; do not edit.
# A test fails when this file differs from what the graph generates.
# Stage `code` writes pipeline/code/<stage>.json: the hash of the psaq source files a stage
# imports and of the code that builds its config from params.yaml and runs it (DVC then checks
# one file per stage instead of 30-odd). Each stage's deps are that file and the upstream outputs
# it reads; its params are the params.yaml keys it reads. Outputs are fixed-path views of the
# shared content-addressed store (models/, data/, metrics/ …) that the flows and the CLI use. A
# stage that params.yaml makes read files outside the project (a dataset folder, a checkpoint,
# timm's cache) is always_changed: it hashes them itself. `make repro` regenerates this file when
# params.yaml changes that.
"""


# the report's files DVC reads as metrics or plots (the rest are plain outputs); plots of data
# name their axes and template (`dvc plots show` draws them; the PNGs are the report's own figures)
REPORT_KINDS = {"metrics.json": ("metrics", {}),
                "accuracy.json": ("plots", {"x": "top1", "y": "bar", "template": "bar_horizontal",
                                            "title": "top-1 (%), mean over runs"}),
                "differences.json": ("plots", {"x": "difference", "y": "bar", "template": "bar_horizontal",
                                               "title": "paired top-1 difference (points)"}),
                **{f"{name}.png": ("plots", {}) for name in ("samples", "similarity", "accuracy", "differences")}}

RUNNER = "flows/run-stage.sh"  # finds the project's interpreter: DVC runs commands with the shell's PATH
# what every stage command runs beside its own stage's code: the command itself, this runner, and
# the code that turns params.yaml into the stage's config
CONFIG_FILES = (RUNNER, "flows/dvc_stages.py", "psaq/params.py", "psaq/pipeline.py", "psaq/stages/graph.py")


def dvc_yaml(params: Params) -> str:
    import yaml

    outside = reads_outside(params)
    stages: dict = {CODE: {"cmd": f"sh {RUNNER} {CODE}",
                           "deps": sorted({f for name in GRAPH for f in code_files(name)}),
                           "outs": [{CODE_VIEW.format(stage=name): {"cache": False}} for name in GRAPH]}}
    for name, stage in GRAPH.items():
        item = {k: f"${{item.{k}}}" for k in stage.matrix}
        flags = "".join(f" --{k.replace('_', '-')} ${{item.{k}}}" for k in stage.matrix)
        spec: dict = {}
        if stage.matrix:
            spec["matrix"] = {k: MATRIX_SOURCES[k] for k in stage.matrix}
        spec["cmd"] = f"sh {RUNNER} {name}{flags}"
        deps = [CODE_VIEW.format(stage=name)]
        for upstream in stage.needs:
            up = GRAPH[upstream]
            if up.matrix and all(k in stage.matrix for k in up.matrix):
                deps += [v.format(**{k: item[k] for k in up.matrix}) for v in up.views]
            else:  # a stage over a whole dimension depends on the folder of its upstream views
                deps += sorted({str(Path(v).parts[0]) + "/" + Path(v).parts[1] for v in up.views})
        spec["deps"] = list(dict.fromkeys(deps))
        if stage.params:
            spec["params"] = list(stage.params)
        outs = [v.format(model="${model.name}", **{k: item[k] for k in stage.matrix}) for v in stage.views]
        if stage.kind == "metrics":  # its full metrics as an out, its scores as DVC metrics
            spec["outs"] = [{o: {"cache": False}} for o in outs]
            # in DVC's cache, so that each experiment keeps its points' scores (pipeline/ is not git's)
            spec["metrics"] = [{SCORES[name][0].format(**{k: item[k] for k in stage.matrix}): {"cache": True}}]
        elif name == "report":  # metrics.json and the plots' data are git-tracked: each experiment commits its own
            kinds = {o: REPORT_KINDS.get(Path(o).name, ("outs", {})) for o in outs}
            for kind in ("outs", "metrics", "plots"):
                spec[kind] = [{o: {"cache": False, **props}} for o, (k, props) in kinds.items() if k == kind]
        elif name in ("data", "model"):
            spec["outs"] = [{o: {"cache": False}} for o in outs]
        else:
            spec["outs"] = outs
        if name in outside:
            spec["always_changed"] = True
        stages[name] = spec
    body = yaml.safe_dump({"vars": ["params.yaml"], "stages": stages}, sort_keys=False, width=120)
    return HEADER + body


def check_reruns_outside_reads(stage: str, params: Params, dvc_file: Path = Path("dvc.yaml")) -> None:
    """A stage that reads files outside the project must run on every repro (DVC cannot see them
    change); refused when dvc.yaml predates the params.yaml that made it read them."""
    import yaml

    what = reads_outside(params).get(stage)
    if what and not ((yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}).get(stage) or {}).get("always_changed"):
        raise ConfigError(f"params.yaml makes stage '{stage}' read {what}, which DVC does not track, and "
                          "dvc.yaml does not rerun the stage on every repro: run `make repro` (it regenerates "
                          "dvc.yaml) or `python -m flows.dvc_stages write-dvc-yaml` first")


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=[*POINT_STAGES, "write-dvc-yaml", "check-params", "sync"])
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--method")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--bits")
    ap.add_argument("--observer")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    def run() -> int:
        params = load_params(args.params)
        if args.stage == "write-dvc-yaml":
            Path("dvc.yaml").write_text(dvc_yaml(params))
            print("wrote dvc.yaml")
            return 0
        if args.stage == "check-params":  # load_params above refused what is wrong
            return 0
        if args.stage == "sync":
            recorded, stale = sync(params)
            if stale:
                print(f"sync: {len(recorded)} of {len(stale)} stages found in the store and recorded in dvc.lock; "
                      f"dvc repro runs the rest")
            return 0
        check_reruns_outside_reads(args.stage, params)
        use_threads(params.runtime.threads)
        keep_freed_memory(params.runtime.keep_freed_memory)
        store = Store(".")
        POINT_STAGES[args.stage](params, store, args)
        return 0

    return run_entry(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
