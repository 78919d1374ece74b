"""MLflow: a parent run per flow run, a nested run per grid point. Explicit run ids (MlflowClient),
so concurrent grid points never share the fluent API's thread-local active run."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from prefect import task

from tasks.settings import project_root


def tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` > params.yaml > a sqlite file at an absolute path in the project
    (absolute because DVC experiments run stages in temporary copies of the project)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{project_root() / 'mlflow.db'}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(uri: str, name: str) -> str:
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=(project_root() / "mlruns").as_uri())
    except Exception:  # noqa: BLE001 - a concurrent run created it first
        return client.get_experiment_by_name(name).experiment_id


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


@task(name="mlflow-start-run", retries=2, retry_delay_seconds=2)
def start_run(uri: str, experiment: str, name: str, params: dict, parent_id: str | None = None,
              tags: dict | None = None) -> str:
    client = _client(uri)
    all_tags = {**(tags or {}), "mlflow.runName": name}
    if parent_id:
        all_tags["mlflow.parentRunId"] = parent_id
    run = client.create_run(experiment_id(uri, experiment), tags=all_tags, run_name=name)
    from mlflow.entities import Param

    flat = _flatten("", params, {})
    batch = [Param(k, str(v)[:6000]) for k, v in flat.items()]
    for i in range(0, len(batch), 100):
        client.log_batch(run.info.run_id, params=batch[i : i + 100])
    return run.info.run_id


@task(name="mlflow-log-point", retries=2, retry_delay_seconds=2)
def log_point(uri: str, run_id: str, metrics: dict, curves: dict[str, list[float]] | None = None,
              artifacts: list[str] | None = None, finish: bool = True) -> None:
    import time

    from mlflow.entities import Metric

    client = _client(uri)
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    for name, values in (curves or {}).items():
        batch += [Metric(name, float(v), now, step) for step, v in enumerate(values)]
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i : i + 1000])
    for path in artifacts or []:
        if Path(path).exists():
            client.log_artifact(run_id, path)
    if finish:
        client.set_terminated(run_id, "FINISHED")


@task(name="mlflow-end-run", retries=2, retry_delay_seconds=2)
def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(uri).set_terminated(run_id, status)


@contextmanager
def parent_run(enabled: bool, uri: str, experiment: str, name: str, params: dict, tags: dict | None = None):
    """The flow's MLflow parent run: FINISHED on a clean exit, FAILED on an exception; None if disabled."""
    if not enabled:
        yield None
        return
    run_id = start_run(uri, experiment, name, params, tags=tags)
    try:
        yield run_id
    except BaseException:
        end_run(uri, run_id, "FAILED")
        raise
    end_run(uri, run_id)
