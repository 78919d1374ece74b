"""Fail fast, in one line, when a tracking store or orchestration server cannot be reached."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from psaq.errors import ConfigError

TIMEOUT_S = 3.0


def _reachable(url: str) -> str | None:
    """None if ``url`` answers (any HTTP status), else the reason it does not."""
    try:
        urllib.request.urlopen(url, timeout=TIMEOUT_S).close()
        return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def check_mlflow(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        reason = _reachable(uri.rstrip("/") + "/health")
        if reason:
            raise ConfigError(f"MLflow tracking server {uri} is unreachable ({reason}); start it (make mlflow-ui), "
                              "unset MLFLOW_TRACKING_URI to use the project's sqlite store, or set tracking.enabled: false")
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ConfigError(f"MLflow store {uri}: folder '{folder}' is missing or not writable")


def check_prefect() -> None:
    """With PREFECT_API_URL set, that server must answer; unset, Prefect starts a temporary one."""
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return
    reason = _reachable(url.rstrip("/") + "/health")
    if reason:
        raise ConfigError(f"Prefect server {url} is unreachable ({reason}); start it (make prefect-server), "
                          "or unset PREFECT_API_URL to run with a temporary local server")
