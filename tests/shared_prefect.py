"""One Prefect server for a whole test run, shared by the pytest-xdist workers.

A Prefect server takes 10-25 s of CPU to start on 2 cores. It is launched in the background (see
tests/background.py) with its own SQLite database in the run's shared folder, as soon as a test
that needs it is collected; the tests wait for it to answer only when they need it. The process
that ends the run (the xdist controller, or the only process without xdist) stops it, after every
worker is done with it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests import background

NAME = "prefect-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path) -> dict:
    """Launch the run's server unless a process of the run has; returns at once with its record."""
    import prefect

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(folder / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{folder / 'prefect.db'}",
               PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    argv = background.python("-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
                             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "error", "--lifespan", "on")
    return background.launch(folder, NAME, argv, env, url=f"http://127.0.0.1:{port}/api")


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def server_url(folder: Path) -> str:
    """The run's server, launched here if need be, once it answers."""
    record = start(folder)
    url = record["url"]
    background.wait(record, lambda: _healthy(url), "the test Prefect server", timeout_s=120)
    return url



def seed_home(folder: Path, prefect_home: Path) -> None:
    """Give a command's own temporary server (under ``prefect_home``) a copy of the run server's
    database, already migrated: as on a user's second run, it starts in seconds, not after 10-20 s
    of migrations on a new database."""
    import sqlite3

    prefect_home.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(folder / "prefect.db") as src, sqlite3.connect(prefect_home / "prefect.db") as dst:
        src.backup(dst)  # a consistent copy while the server writes to it
