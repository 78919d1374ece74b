"""Pipeline tests: a temporary project folder, a tiny params.yaml, and one Prefect test server."""

import os
from pathlib import Path

import pytest
import yaml

TINY = {
    "model": {"model_args": {"depth": 1}},
    "train": {"epochs": 2},
    "synthesis": {"steps_per_round": 4, "warmup_steps": 1, "num_samples": 8},
    "quant": {"w_bits": 8, "a_bits": 8},
    "grid": {"methods": ["psaq", "gaussian"], "seeds": [0], "bits": ["W8A8", "W4A8"], "max_concurrency": 2},
    "runtime": {"device": "cpu"},
    "eval": {"batch_size": 128},
}


REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def write_params(folder: Path, **overrides) -> Path:
    """The repository's params.yaml made tiny, with ``overrides`` per section."""
    data = yaml.safe_load(REPO_PARAMS.read_text())
    for section, values in [*TINY.items(), *overrides.items()]:
        data.setdefault(section, {}).update(values)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def project(tmp_path, monkeypatch, prefect_server):
    monkeypatch.setenv("PSAQ_PROJECT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    os.makedirs(tmp_path / "mlruns", exist_ok=True)
    return tmp_path
