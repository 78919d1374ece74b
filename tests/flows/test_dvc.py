"""`dvc repro` in a temporary git repository: full run, then a bit change reruns only evaluate + report."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.flows.conftest import write_params

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def run(cmd, cwd, env):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_dvc_repro_reuses_samples_after_a_bit_change(tmp_path):
    work = tmp_path / "repo"
    top_level = {".venv", ".git", "data", "models", "metrics", "reports", ".prefect", "mlruns", "mlflow.db",
                 ".psaq-cache", ".pytest_cache", "benchmarks", "tests"}

    def ignore(folder, names):
        skip = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        return skip | (top_level & set(names) if Path(folder) == REPO else set())

    shutil.copytree(REPO, work, ignore=ignore)
    write_params(work, grid={"methods": ["gaussian"], "seeds": [0], "bits": ["W8A8"]})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(work), "PSAQ_PROJECT": str(work)}
    env.pop("MLFLOW_TRACKING_URI", None)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"]):
        run(cmd, work, env)
    dvc = [sys.executable, "-m", "dvc"]
    first = ran_stages(run([*dvc, "repro"], work, env))
    assert first == {"train", "synthesize@gaussian-0", "fp32", "evaluate@gaussian-0-W8A8", "report"}
    assert (work / "reports/dvc/benchmark.md").exists()
    assert ran_stages(run([*dvc, "repro"], work, env)) == set()

    write_params(work, grid={"methods": ["gaussian"], "seeds": [0], "bits": ["W8A8", "W8A6"]})
    second = ran_stages(run([*dvc, "repro"], work, env))
    assert second == {"evaluate@gaussian-0-W8A6", "report"}
    metrics = run([*dvc, "metrics", "show", "--json"], work, env)
    assert "gaussian-seed0-W8A6.json" in metrics
