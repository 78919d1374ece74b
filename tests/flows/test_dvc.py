"""`dvc repro` in a temporary git repository: the flows' artifacts reused, and exactly the right
stages out of date after a bit change and after a code change (what `dvc status` reports is what
`dvc repro` reruns; each stage command costs a Python start with torch, 7-9 s here, which is why
`flows.dvc_stages sync` records what the store already holds in one process)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from psaq.content import file_sha256
from tests.flows.conftest import REPO, enter_project, subprocess_env, write_params

pytestmark = pytest.mark.slow


def run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def built(output: str) -> set[str]:
    return {line.split(":")[0] for line in output.splitlines() if ": built " in line}


def stale(status: str) -> set[str]:
    return {line.strip().rstrip(":") for line in status.splitlines() if line and not line.startswith("\t")
            and line.strip().endswith(":")}


@pytest.mark.cost(120)
def test_dvc_repro_shares_the_flows_artifacts_and_reruns_only_what_changed(tmp_path, monkeypatch, prefect_server):
    work = tmp_path / "repo"
    skip_top = {".venv", ".git", "data", "models", "metrics", "reports", "pipeline", ".prefect", "mlruns",
                "mlflow.db", ".psaq-cache", ".pytest_cache", "benchmarks", "tests", "exports", "dvc.lock"}

    def ignore(folder, names):
        skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        return skip | (skip_top & set(names) if Path(folder) == REPO else set())

    shutil.copytree(REPO, work, ignore=ignore)
    # every point exported, as dvc.yaml's graph does (the flows export only the methods grid.export names)
    write_params(work, grid={"methods": ["gaussian"], "seeds": [0], "bits": ["W8A8"], "export": True},
                 tracking={"enabled": False})
    # as a user runs `.venv/bin/dvc repro` without activating the environment: no interpreter of
    # the project's on PATH; the stage commands find the project's .venv themselves
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {**subprocess_env(work, code=work), "DVC_NO_ANALYTICS": "1"}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env.pop("VIRTUAL_ENV", None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        run(cmd, work, env)
    dvc = [sys.executable, "-m", "dvc"]

    # the benchmark flow first (in this process, on the session's Prefect server): dvc repro then
    # finds every artifact in the shared store
    from flows.benchmark import benchmark

    enter_project(monkeypatch, work)
    benchmark("params.yaml")
    objects = sorted(p.relative_to(work) for p in work.glob("models/quantized/*.safetensors"))
    # `make repro` first records what the store holds in one process: no stage command runs for it
    synced = run([sys.executable, "-m", "flows.dvc_stages", "sync"], work, env)
    assert "10 of 10 stages found in the store" in synced, synced
    assert "Data and pipelines are up to date" in run([*dvc, "status"], work, env)
    # a view deleted: DVC's run cache (filled by the commit) puts it back without running anything
    metrics_view = work / "pipeline" / "metrics" / "m0" / "gaussian-s0-W8A8-minmax.json"
    recorded = file_sha256(metrics_view)
    metrics_view.unlink()
    first = run([*dvc, "repro"], work, env)
    assert ran_stages(first) == set(), first  # no stage reads outside the project: none runs each time
    assert "'evaluate@0-gaussian-0-W8A8-minmax' is cached" in first and file_sha256(metrics_view) == recorded
    # its stage command, forced, takes the flow's artifact from the store
    metrics_view.unlink()
    again = run([*dvc, "repro", "--force", "--single-item", "evaluate@0-gaussian-0-W8A8-minmax"], work, env)
    assert ran_stages(again) == {"evaluate@0-gaussian-0-W8A8-minmax"}, again
    assert not built(again), built(again)  # nothing recomputed: the flow's artifacts were reused
    assert "sync" not in run([sys.executable, "-m", "flows.dvc_stages", "sync"], work, env)  # nothing left to record
    assert sorted(p.relative_to(work) for p in work.glob("models/quantized/*.safetensors")) == objects
    view = work / "pipeline" / "quantized" / "m0" / "gaussian-s0-W8A8-minmax.safetensors"
    assert file_sha256(view) in {file_sha256(work / o) for o in objects}  # DVC tracks the flow's artifact
    assert (work / "reports" / "digits-vit" / "benchmark.md").exists()
    assert "W8A8" in run([*dvc, "metrics", "show", "--json"], work, env)
    # the table fits a terminal: the figures users compare, one short row per point
    table = run([*dvc, "metrics", "show"], work, env)
    assert "top1" in table and "agreement" in table and max(map(len, table.splitlines())) <= 160, table
    # nothing changed: nothing is out of date
    assert "Data and pipelines are up to date" in run([*dvc, "status"], work, env)

    # a new bit width: calibration onwards for it, and the report; no synthesis
    write_params(work, grid={"methods": ["gaussian"], "seeds": [0], "bits": ["W8A8", "W8A6"], "export": True})
    reran = stale(run([*dvc, "status"], work, env))
    assert reran == {"calibrate@0-gaussian-0-W8A6-minmax", "reconstruct@0-gaussian-0-W8A6-minmax",
                     "evaluate@0-gaussian-0-W8A6-minmax", "export@0-gaussian-0-W8A6-minmax", "report"}, reran

    # a code change marks exactly the stages that import the file: DVC sees the file change in
    # stage `code`, whose run rewrites the code views of just those stages
    with open(work / "psaq" / "synth" / "kde.py", "a") as f:
        f.write("\n_TOUCHED = 1  # a code edit: a comment alone changes no key\n")
    assert stale(run([*dvc, "status"], work, env)) - reran == {"code"}  # beside the new width's stages
    run([*dvc, "repro", "--single-item", "code"], work, env)
    marked = stale(run([*dvc, "status"], work, env))
    assert {"samples@0-gaussian-0", "report"} <= marked
    assert not any(s.startswith(("fp32", "calibrate@0-gaussian-0-W8A8", "evaluate@0-gaussian-0-W8A8", "export@0-gaussian-0-W8A8"))
                   for s in marked), marked
    with open(work / "psaq" / "quant" / "primitives.py", "a") as f:
        f.write("\n_TOUCHED = 1  # a code edit: a comment alone changes no key\n")
    run([*dvc, "repro", "--single-item", "code"], work, env)
    marked = stale(run([*dvc, "status"], work, env))
    assert "calibrate@0-gaussian-0-W8A8-minmax" in marked and "export@0-gaussian-0-W8A8-minmax" in marked
    assert not any(s.startswith("fp32") for s in marked), marked
