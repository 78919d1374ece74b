"""Pipeline tests: a temporary project folder, a tiny params.yaml, and one Prefect test server."""

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests import shared_prefect
from tests.conftest import run_folder

TINY = {
    "model": {"name": "digits-vit", "pretrained": False, "model_args": {"depth": 1}},
    "train": {"epochs": 2},
    "synthesis": {"steps_per_round": 4, "warmup_steps": 1, "num_samples": 8},
    "quant": {"w_bits": 8, "a_bits": 8},
    "grid": {"methods": ["psaq", "gaussian"], "seeds": [0], "bits": ["W8A8", "W4A8"], "max_concurrency": 2},
    "runtime": {"device": "cpu"},
    "eval": {"batch_size": 128},
}


REPO = Path(__file__).resolve().parents[2]
REPO_PARAMS = REPO / "params.yaml"


def write_params(folder: Path, **overrides) -> Path:
    """The repository's params.yaml made tiny, with ``overrides`` per section."""
    data = yaml.safe_load(REPO_PARAMS.read_text())
    for section, values in [*TINY.items(), *overrides.items()]:
        data.setdefault(section, {}).update(values)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def subprocess_env(project: Path, prefect_api_url: str | None = None, code: Path = REPO) -> dict:
    """The environment of a flow or stage command run in ``project``: none of this process's
    Prefect or MLflow settings. With ``prefect_api_url`` the command uses that server (the test
    session's) instead of starting a temporary one of its own, which takes 10-20 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PSAQ_PROJECT=str(project), PYTHONPATH=str(code), PREFECT_HOME=str(project / ".prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
               MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if prefect_api_url:
        env["PREFECT_API_URL"] = prefect_api_url
    return env


@pytest.fixture(scope="session")
def prefect_server():
    """The test run's Prefect server (one for all xdist workers); yields its API URL, which this
    process's flows and the commands started by the tests use."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = shared_prefect.server_url(run_folder())
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield url
        APILogWorker.drain_all(timeout=5)  # this process's log records reach the server before it stops


def enter_project(monkeypatch, folder: Path) -> None:
    """Run this process's flows and commands in ``folder``, as its project."""
    monkeypatch.setenv("PSAQ_PROJECT", str(folder))
    monkeypatch.chdir(folder)


@pytest.fixture
def project(tmp_path, monkeypatch, prefect_server):
    enter_project(monkeypatch, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    os.makedirs(tmp_path / "mlruns", exist_ok=True)
    return tmp_path
