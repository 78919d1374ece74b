"""One Prefect server for a whole test run, shared by the pytest-xdist workers.

A Prefect server takes 15-25 s of CPU to start on 2 cores. The first process of the run that
needs one starts it (under a file lock) with its own SQLite database in the run's shared folder
and writes its address there; the others read it. The process that ends the run (the xdist
controller, or the only process without xdist) stops it, after every worker is done with it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

STARTUP_TIMEOUT_S = 120
_started: list[subprocess.Popen] = []  # reaped by stop() when the starting process is the stopping one


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _start(folder: Path) -> dict:
    import prefect

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(folder / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{folder / 'prefect.db'}",
               PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    log = open(folder / "prefect-server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
                             "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "error", "--lifespan", "on"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _started.append(proc)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = (folder / "prefect-server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the test Prefect server did not start (exit {proc.poll()}):\n{tail}")
        time.sleep(0.2)
    return {"pid": proc.pid, "url": url}


def server_url(folder: Path) -> str:
    """The run's server, started here if no process of the run has started it yet."""
    from filelock import FileLock

    info = folder / "prefect-server.json"
    with FileLock(str(info) + ".lock"):
        if not info.exists():
            info.write_text(json.dumps(_start(folder)))
        return json.loads(info.read_text())["url"]


def stop(folder: Path) -> None:
    import psutil

    info = folder / "prefect-server.json"
    if not info.exists():
        return
    pid = json.loads(info.read_text())["pid"]
    info.unlink()
    try:
        server = psutil.Process(pid)
        server.terminate()
        deadline = time.monotonic() + 10
        while server.is_running() and server.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.1)
        if server.is_running() and server.status() != psutil.STATUS_ZOMBIE:
            server.kill()
    except psutil.NoSuchProcess:
        pass
    for p in _started:  # reap it where this process started it
        p.wait()
