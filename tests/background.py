"""Work for the whole test run that starts in the background as soon as a collected test needs it,
so that no worker sits idle waiting while another does it: the first process of the run that asks
launches it (under a file lock); every process waits for its output only when a test needs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

_launched: list[subprocess.Popen] = []  # reaped here when this process launched them


def launch(folder: Path, name: str, argv: list[str], env: dict | None = None, cwd: Path | None = None, **extra) -> dict:
    """Start ``argv`` once per run; returns its record (pid, log and ``extra``, as the launching
    process wrote them)."""
    from filelock import FileLock

    info = folder / f"{name}.json"
    with FileLock(str(info) + ".lock"):
        if not info.exists():
            log_path = folder / f"{name}.log"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            _launched.append(proc)
            info.write_text(json.dumps({"pid": proc.pid, "log": str(log_path), **extra}))
        return json.loads(info.read_text())


def running(pid: int) -> bool:
    import psutil

    for p in _launched:
        p.poll()  # a child of this process that exited reads as gone only once reaped
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait(record: dict, ready: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if not running(record["pid"]) and not ready():
            raise RuntimeError(f"{what} exited without finishing:\n{Path(record['log']).read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not finish in {timeout_s:.0f} s; its output is in {record['log']}")
        time.sleep(0.2)


def stop_all(folder: Path) -> None:
    """Stop everything launched for this run that still runs (the end of the run)."""
    import psutil

    for info in folder.glob("*.json"):
        pid = json.loads(info.read_text())["pid"]
        info.unlink()
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            deadline = time.monotonic() + 10
            while running(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if running(pid):
                proc.kill()
        except psutil.NoSuchProcess:
            pass
    for p in _launched:  # reap what this process launched
        p.wait()


def python(*args: str) -> list[str]:
    return [sys.executable, *args]
