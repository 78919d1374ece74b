"""Project paths and environment defaults shared by tasks, flows and the DVC stage commands."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def project_root() -> Path:
    """Where artifacts go: ``$PSAQ_PROJECT`` or the current directory (DVC runs stages there)."""
    return Path(os.environ.get("PSAQ_PROJECT", os.getcwd())).resolve()


def configure_environment(root: Path | None = None) -> None:
    """Defaults only: anything the user exported wins."""
    root = root or project_root()
    defaults = {
        # the project's own Prefect database: runs, deployments and artifacts of another checkout
        # never show here (make run's temporary server and make prefect-server both use it)
        "PREFECT_HOME": str(root / ".prefect" / "home"),
        "PREFECT_LOCAL_STORAGE_PATH": str(root / ".prefect" / "storage"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    # Prefect makes its home folder on import, but not the folders above it (.prefect/ in a fresh clone)
    try:
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # an unwritable home of the user's choosing: Prefect says so itself


def store():
    """The project's artifact store (shared with the command line and the DVC stages)."""
    from psaq.store import Store

    return Store(project_root())
