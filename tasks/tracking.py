"""MLflow: a parent run per flow run, a nested run per grid point, each result logged once.

Explicit run ids (MlflowClient), so concurrent grid points never share the fluent API's
thread-local active run. One naming scheme: ``section.key`` for params and metrics alike
(``model.name``, ``quant.w_bits``, ``eval.top1``, ``synthesis.wall_s``). A grid point logged
before (the same point: its metrics artifact's name, which carries the evaluate stage's key) is
not logged again: the parent run lists the earlier runs under ``psaq.reused_runs``. Two points
whose results happen to be byte-identical are still two runs. Runs left RUNNING by a killed process are marked FAILED
when the next flow starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from prefect import task

from psaq.errors import PsaqError, TrackingError
from psaq.processes import alive
from tasks.settings import project_root

RESULT_TAG = "psaq.result"  # content hash of a point's metrics artifact
POINT_TAG = "psaq.point"  # the point's identity: its metrics artifact's name, <stem>-<evaluate key>.json
REUSED_TAG = "psaq.reused_runs"
PID_TAG, HOST_TAG = "psaq.pid", "psaq.host"
MODEL_TAG = "psaq.model_uri"  # the point's ONNX, logged as an MLflow model


def tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` > params.yaml > a sqlite file at an absolute path in the project
    (absolute because DVC experiments run stages in temporary copies of the project)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{project_root() / 'mlflow.db'}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@contextmanager
def _store_errors(uri: str, doing: str):
    """An MLflow failure (a store deleted mid-run, a full disk, a dropped server) as one line."""
    try:
        yield
    except PsaqError:
        raise
    except Exception as exc:  # MLflow raises many kinds
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise TrackingError(f"MLflow store {uri} failed while {doing} ({type(exc).__name__}: {reason}); "
                            "the results are in the store: rerun to log them, or set tracking.enabled: false") from exc


def experiment_id(uri: str, name: str) -> str:
    """The experiment, created on first use as a model-development experiment, so the UI opens
    on its runs table."""
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            client.create_experiment(name, artifact_location=(project_root() / "mlruns").as_uri(),
                                     tags={"mlflow.experimentKind": "custom_model_development"})
        except Exception:  # noqa: BLE001 - a concurrent run created it first
            pass
        exp = client.get_experiment_by_name(name)
    return exp.experiment_id


# The installed MLflow UI (3.x) opens an experiment on the view its `workflowType` names: the URL
# parameter, else the browser's last choice, else "genai" (the GenAI Overview page, with no runs).
# The experimentKind tag above no longer decides it; a link with the parameter lands on the runs table.
UI = "http://127.0.0.1:5000"  # where `make mlflow-ui` serves


# The runs table's columns and grouping: the UI applies a view stored as the experiment tag
# mlflow.sharedViewState.<key> when the URL carries viewStateShareKey=<key> (its "Share" button
# writes such tags). Without it the table shows Source, Models and Dataset, and the metrics sit
# behind "Show more columns".
VIEW_KEY = "psaq-grid"
VIEW_COLUMNS = (("metrics", "eval.top1"), ("metrics", "eval.agreement"), ("metrics", "eval.fp32_top1"),
                ("params", "model.name"), ("params", "synthesis.method"), ("params", "point.bits"),
                ("params", "synthesis.seed"))
MADE_BY_TAG = "psaq.made_by"  # the parent run that computed a point: "<flow> <start time>"


def made_by(parent) -> str:
    """The group a flow run and the points it computed share in the runs table."""
    return f"{parent.info.run_name} {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(parent.info.start_time / 1000))}"


def runs_view() -> dict:
    """The runs table psaq's link opens: the grid's settings and key metrics as columns, the
    points grouped by the flow run that made them."""
    columns = [f"{kind}.`{key}`" for kind, key in VIEW_COLUMNS]
    return {"selectedColumns": columns, "columnOrder": columns, "runsHiddenMode": "SHOW_ALL",
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": MADE_BY_TAG}]}}


def runs_page(uri: str, name: str) -> str:
    """The experiment's runs table in the MLflow UI that `make mlflow-ui` starts, with psaq's view."""
    exp_id = experiment_id(uri, name)
    with _store_errors(uri, "storing the runs view"):
        _client(uri).set_experiment_tag(exp_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(runs_view()))
    return f"{UI}/#/experiments/{exp_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def flatten(prefix: str, value, out: dict | None = None) -> dict:
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def _create(client, exp_id: str, name: str, params: dict, tags: dict) -> str:
    from mlflow.entities import Param

    run = client.create_run(exp_id, tags={**tags, "mlflow.runName": name, PID_TAG: str(os.getpid()),
                                          HOST_TAG: socket.gethostname()}, run_name=name)
    batch = [Param(k, str(v)[:6000]) for k, v in flatten("", params).items()]
    for i in range(0, len(batch), 100):
        client.log_batch(run.info.run_id, params=batch[i : i + 100])
    return run.info.run_id


def fail_stale_runs(uri: str, experiment: str) -> list[str]:
    """Runs still RUNNING whose process on this host is gone (a ``kill -9``) are marked FAILED."""
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    host, stale = socket.gethostname(), []
    for run in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=1000):
        pid = run.data.tags.get(PID_TAG)
        if run.data.tags.get(HOST_TAG) == host and pid and pid.isdigit() and not alive(int(pid)):
            client.set_terminated(run.info.run_id, "FAILED")
            stale.append(run.info.run_id)
    return stale


@task(name="mlflow-log-point", retries=2, retry_delay_seconds=2)
def log_point(uri: str, experiment: str, parent_id: str, name: str, params: dict, record: dict,
              history: dict[str, list[float]], files: dict[str, str]) -> tuple[str, bool]:
    """(run id, reused): a nested run for a grid point, unless its result is already logged.
    ``files``: {the name it has in MLflow: its path in the store}; an ``.onnx`` file is logged as
    an MLflow model (ONNX flavour, with its signature and an input example)."""
    with _store_errors(uri, f"logging {name}"):
        return _log_point(uri, experiment, parent_id, name, params, record, history, files)


def log_files(client, run_id: str, files: dict[str, str]) -> None:
    """Each file under a readable name (the store's names are content hashes, alike at a glance)."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="psaq-mlflow-") as tmp:
        for name, path in files.items():
            if not Path(path).exists():
                continue
            target = Path(tmp) / name
            try:
                os.link(path, target)  # no copy of a large file where the file system allows
            except OSError:
                shutil.copyfile(path, target)
            client.log_artifact(run_id, str(target))


def log_onnx_model(uri: str, run_id: str, path: str, name: str) -> str:
    """The exported model as an MLflow model: ONNX flavour, a signature and an input example of
    the input's shape, so that `mlflow models serve` and the registry can take it. Returns its URI."""
    from importlib import metadata

    import mlflow
    import numpy as np
    import onnx
    import onnxruntime as ort
    from mlflow.models import infer_signature

    ort.set_default_logger_severity(3)  # its graph-cleaning notes are not news to the user
    model = onnx.load(path)
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]  # the batch axis is symbolic
    example = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    output = session.run(None, {session.get_inputs()[0].name: example})[0]
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(model, name=name, signature=infer_signature(example, output),
                                     input_example=example, save_as_external_data=False,
                                     onnx_execution_providers=["CPUExecutionProvider"],
                                     # what running it needs, stated: MLflow's inference starts a
                                     # subprocess per model (1.8 of its 2 s here)
                                     pip_requirements=[f"{p}=={metadata.version(p)}"
                                                       for p in ("onnx", "onnxruntime", "numpy")])
    return info.model_uri


def _log_point(uri, experiment, parent_id, name, params, record, history, files) -> tuple[str, bool]:
    from mlflow.entities import Metric

    client = _client(uri)
    exp_id = experiment_id(uri, experiment)
    point = Path(record["metrics"]).name
    found = client.search_runs([exp_id], f"tags.`{POINT_TAG}` = '{point}' and tags.`{RESULT_TAG}` = "
                                         f"'{record['metrics_sha256']}' and attributes.status = 'FINISHED'", max_results=1)
    if found:
        return found[0].info.run_id, True
    run_id = _create(client, exp_id, name, params, {"mlflow.parentRunId": parent_id, POINT_TAG: point,
                                                    RESULT_TAG: record["metrics_sha256"],
                                                    MADE_BY_TAG: made_by(client.get_run(parent_id))})
    now = int(time.time() * 1000)
    metrics = {"eval.top1": record["top1"], "eval.top5": record["top5"], "eval.agreement": record["agreement"],
               "eval.fp32_top1": record["fp32_top1"], "eval.feature_cosine": record.get("feature_cosine"),
               "eval.knn_index": record.get("knn_index"), "synthesis.wall_s": record.get("synthesis_wall_s"),
               "synthesis.steps_per_s": record.get("steps_per_s")}
    batch = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None]
    for curve, values in history.items():  # section.key names, e.g. synthesis.loss, reconstruct.loss.blocks.0
        batch += [Metric(curve, float(v), now, step) for step, v in enumerate(values)]
    for i in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[i : i + 1000])
    log_files(client, run_id, {k: v for k, v in files.items() if not k.endswith(".onnx")})
    for file_name, path in files.items():
        if file_name.endswith(".onnx") and Path(path).exists():
            model_uri = log_onnx_model(uri, run_id, path, name.replace(" ", "-").replace("+", "-"))
            client.set_tag(run_id, MODEL_TAG, model_uri)
    client.set_terminated(run_id, "FINISHED")
    return run_id, False


@task(name="mlflow-attach", retries=2, retry_delay_seconds=2)
def attach(uri: str, run_id: str, files: list[str], tags: dict | None = None, metrics: dict | None = None) -> None:
    with _store_errors(uri, "attaching the report"):
        client = _client(uri)
        for path in files:
            client.log_artifact(run_id, path)
        for k, v in (tags or {}).items():
            client.set_tag(run_id, k, v)
        for k, v in (metrics or {}).items():
            client.log_metric(run_id, k, float(v))


@contextmanager
def parent_run(enabled: bool, uri: str, experiment: str, name: str, params: dict, tags: dict | None = None):
    """The flow's MLflow parent run: FINISHED on a clean exit, FAILED on an exception; None if disabled."""
    if not enabled:
        yield None
        return
    with _store_errors(uri, "starting the run"):
        fail_stale_runs(uri, experiment)
        client = _client(uri)
        run_id = _create(client, experiment_id(uri, experiment), name, params, tags or {})
        client.set_tag(run_id, MADE_BY_TAG, made_by(client.get_run(run_id)))
    try:
        yield run_id
    except BaseException:
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001 - the store itself may be what failed; the error that ends the run is raised
            pass
        raise
    with _store_errors(uri, "finishing the run"):
        client.set_terminated(run_id, "FINISHED")


@contextmanager
def _quiet(logger: str):
    import logging

    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def metric_name(name: str) -> str:
    """MLflow refuses ``+`` in a metric name: ``W4A4+repq.psaq`` → ``W4A4-repq.psaq``."""
    return name.replace("+", "-")


@task(name="mlflow-summarize", retries=2, retry_delay_seconds=2)
def summarize_parent(uri: str, run_id: str, summary: dict, headline: str, records: list[dict],
                     runs: list[str | None]) -> None:
    """What a flow run's parent shows, whether its points were computed now or logged before: the
    report's headline as the run's description, the tracked figures (mean top-1 per method and
    setting, the paired differences) as metrics, and a table of its points with their runs."""
    from mlflow.entities import Metric

    from psaq.report import tracked_metrics

    with _store_errors(uri, "summarizing the run"):
        client, now = _client(uri), int(time.time() * 1000)
        metrics = flatten("summary", tracked_metrics(summary))
        client.log_batch(run_id, metrics=[Metric(metric_name(k), float(v), now, 0) for k, v in metrics.items()])
        client.set_tag(run_id, "mlflow.note.content", headline)
        client.set_tag(run_id, "psaq.points", str(len(records)))
        columns = ("method", "seed", "bits", "observer", "train_seed", "top1", "agreement")
        table = {c: [r.get(c) for r in records] for c in columns}
        table["run"] = list(runs)
        client.log_table(run_id, data=table, artifact_file="points.json")


@task(name="mlflow-report", retries=2, retry_delay_seconds=2)
def log_report(uri: str, run_id: str, files: dict[str, Path], headline: str, records: list[dict],
               runs: list[str | None], model: str, register: bool) -> list[str]:
    """A grid's report on its parent run, the same for a flow and for ``dvc repro``: the report's
    files, the summary (``summarize_parent``) and, where asked, the registered best models (their
    lines). Each part may run twice under a retry: files replace themselves, a registered best adds
    no version."""
    attach.fn(uri, run_id, [str(p) for p in files.values()])
    summary = json.loads(Path(files["summary.json"]).read_text())
    summarize_parent.fn(uri, run_id, summary, headline, records, runs)
    return register_best.fn(uri, model, records, runs) if register else []


@task(name="mlflow-register", retries=2, retry_delay_seconds=2)
def register_best(uri: str, model: str, records: list[dict], runs: list[str | None]) -> list[str]:
    """Per bit setting, the data-free point with the best top-1 (ties: the first in grid order)
    whose ONNX was logged, registered as ``<model>-<setting>`` with the alias ``best``. A rerun
    whose best point is the registered one adds no version. Returns one line per model."""
    import mlflow

    from psaq.report import column_of
    from psaq.synth.methods import method_of

    said = []
    with _store_errors(uri, "registering the best models"):
        client = _client(uri)
        best: dict[str, tuple[dict, str]] = {}
        for rec, run in zip(records, runs):
            if run is None or method_of(rec["method"]).needs_data or not rec.get("onnx"):
                continue
            column = column_of(rec)
            if column not in best or rec["top1"] > best[column][0]["top1"]:
                best[column] = (rec, run)
        mlflow.set_tracking_uri(uri)
        for column, (rec, run) in best.items():
            name = metric_name(f"{model}-{column}").replace(" ", "-")
            model_uri = client.get_run(run).data.tags.get(MODEL_TAG)
            if not model_uri:
                continue
            try:
                current = client.get_model_version_by_alias(name, "best")
            except Exception:  # noqa: BLE001 - no such model or alias yet
                current = None
            if current is not None and current.run_id == run:
                version, new = current.version, False
            else:
                # its "Successfully registered" and "Created version" lines (on stderr): said once below
                with _quiet("mlflow"), contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()):
                    version, new = mlflow.register_model(model_uri, name, await_registration_for=0).version, True
                client.set_registered_model_alias(name, "best", version)
            said.append(f"{name} v{version} @best: {rec['method']} seed {rec['seed']}, top-1 {rec['top1']:.2f}"
                        + ("" if new else " (already registered)"))
    return said
