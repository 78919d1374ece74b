"""Project paths and environment defaults shared by tasks, flows and the DVC stage commands."""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """Where artifacts go: ``$PSAQ_PROJECT`` or the current directory (DVC runs stages there)."""
    return Path(os.environ.get("PSAQ_PROJECT", os.getcwd())).resolve()


def configure_environment(root: Path | None = None) -> None:
    """Defaults only: anything the user exported wins."""
    root = root or project_root()
    defaults = {
        "PREFECT_LOCAL_STORAGE_PATH": str(root / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the library and task sources: part of every cache key, so a code change reruns."""
    h = hashlib.sha256()
    for folder in ("psaq", "tasks"):
        for path in sorted((PACKAGE_ROOT / folder).rglob("*.py")):
            h.update(path.relative_to(PACKAGE_ROOT).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def artifact_dir(kind: str, root: Path | None = None) -> Path:
    """data/samples, models/…, metrics/…, reports/ under the project root."""
    path = (root or project_root()) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
