"""Fail fast, in one line, before any work: unreachable or wrong services, missing data."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from psaq.errors import ConfigError

TIMEOUT_S = 3.0
MLFLOW_SCHEMES = ("http://", "https://", "sqlite:///", "file:", "postgresql", "mysql", "databricks")


def _get(url: str) -> tuple[int | None, str, str | None]:
    """(status, body, reason it failed)."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:
            return r.status, r.read(2000).decode(errors="replace"), None
    except urllib.error.HTTPError as exc:
        return exc.code, "", None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, "", str(getattr(exc, "reason", exc))


def check_mlflow(uri: str) -> None:
    fix = "unset MLFLOW_TRACKING_URI to use the project's sqlite store, or set tracking.enabled: false"
    if not uri.startswith(MLFLOW_SCHEMES):
        raise ConfigError(f"MLflow tracking URI '{uri}' has a scheme psaq does not know "
                          f"(use http(s):// or sqlite:///PATH); {fix}")
    if uri.startswith("file:") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise ConfigError(f"MLflow tracking URI '{uri}' is a file store, which this MLflow refuses to write; use "
                          "sqlite:///PATH (`mlflow migrate-filestore` moves an existing one), or set "
                          "MLFLOW_ALLOW_FILE_STORE=true to keep it")
    if uri.startswith(("http://", "https://")):
        status, body, reason = _get(uri.rstrip("/") + "/health")
        if reason:
            raise ConfigError(f"MLflow tracking server {uri} is unreachable ({reason}); start it (make mlflow-ui), {fix}")
        if status != 200 or body.strip() != "OK":
            raise ConfigError(f"{uri} answers, but not as an MLflow tracking server (/health gave {status}); {fix}")
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"MLflow store {uri}: folder '{folder}' is missing or not writable; {fix}")


def check_prefect() -> None:
    """With a Prefect API configured, it must answer as Prefect; without one, a temporary server starts."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return
    fix = "start it (make prefect-server), or unset PREFECT_API_URL to run with a temporary local server"
    status, body, reason = _get(url.rstrip("/") + "/health")
    if reason:
        raise ConfigError(f"Prefect server {url} is unreachable ({reason}); {fix}")
    try:
        healthy = status == 200 and json.loads(body) is True
    except ValueError:
        healthy = False
    if not healthy:
        raise ConfigError(f"{url} answers, but not as a Prefect API (/health gave {status}); {fix}")
    # /health is a common path; a Prefect server also names its version at /admin/version
    status, body, reason = _get(url.rstrip("/") + "/admin/version")
    try:
        version = json.loads(body) if status == 200 else None
    except ValueError:
        version = None
    if not isinstance(version, str):
        raise ConfigError(f"{url} answers /health, but not as a Prefect API (/admin/version gave "
                          f"{status or reason}); {fix}")


def check_sources(params) -> None:
    """The datasets and the checkpoint the run names exist before a flow starts."""
    from psaq.stages.data import describe

    if params.model.checkpoint and not Path(params.model.checkpoint).expanduser().is_file():
        raise ConfigError(f"checkpoint '{params.model.checkpoint}' does not exist (model.checkpoint in params.yaml)")
    describe(params.model, params.runtime.dataset, params.runtime.calib_dataset)  # refuses a missing folder
    from psaq.synth.methods import method_of

    reading = [m for m in params.grid.methods if method_of(m).needs_data]
    if reading and params.runtime.calib_dataset is None:
        _, calib = describe(params.model, params.runtime.dataset, None)
        if calib.startswith("nothing"):
            raise ConfigError(f"grid.methods has '{reading[0]}', which needs training images: set runtime.calib_dataset, or "
                              "runtime.dataset to a root holding train/ and val/")

