"""How every flow entry point starts and fails.

- One line per error (``psaq: error: …``), no Prefect traceback before it; ``--debug`` shows all.
- With no Prefect server configured, a temporary one is started that the kernel stops when this
  process dies, even by ``kill -9``, so no server is left running.
- Temporary files of writers that no longer run are removed from the store first.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from pathlib import Path

from psaq.cli import run_entry as run_psaq_entry
from psaq.errors import PsaqError


class _DropPsaqTracebacks(logging.Filter):
    """Prefect logs a failed task's or flow's traceback; for a psaq error the one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (PsaqError, KeyboardInterrupt))


_PREFECT_LOGGERS = ("prefect", "prefect.task_runs", "prefect.flow_runs", "prefect.engine")


def _prefect_log_targets() -> list:
    loggers = [logging.getLogger(n) for n in _PREFECT_LOGGERS]
    return [*loggers, *(h for lg in loggers for h in lg.handlers)]


def drop_psaq_tracebacks() -> None:
    """For the rest of this process (a deployment's flow-run process, which logs the error of a
    failed run with its traceback after the flow has returned)."""
    for target in _prefect_log_targets():
        if not any(isinstance(f, _DropPsaqTracebacks) for f in target.filters):
            target.addFilter(_DropPsaqTracebacks())


@contextmanager
def quiet_prefect_errors():
    filt = _DropPsaqTracebacks()
    loggers = [logging.getLogger(n) for n in _PREFECT_LOGGERS]
    handlers = [h for lg in loggers for h in lg.handlers]
    for target in (*loggers, *handlers):
        target.addFilter(filt)
    try:
        yield
    finally:
        for target in (*loggers, *handlers):
            target.removeFilter(filt)


RUN_LOG = Path(".prefect") / "flow-runs.log"  # every flow and task run's log lines, when the console shows few


@contextmanager
def console(verbose: bool = False, log_path: Path = RUN_LOG):
    """A console a person can read: Prefect's per-task lines (about 10 per grid point) and MLflow's
    start-up lines go to ``log_path`` only, warnings and errors still to both; ``verbose`` shows
    them all on the console as well. The Prefect UI receives every line either way."""
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    to_file = logging.FileHandler(log_path, encoding="utf-8")
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(PrefectFormatter(  # Prefect's console format: each line names its flow or task run
        "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s",
        flow_run_fmt="%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
        task_run_fmt="%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s"))
    consoles = [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
    levels = [h.level for h in consoles]
    mlflow = logging.getLogger("mlflow")
    mlflow_level = mlflow.level
    root.addHandler(to_file)
    mlflow_env = os.environ.get("MLFLOW_LOGGING_LEVEL")
    if not verbose:
        for handler in consoles:
            handler.setLevel(max(handler.level, logging.WARNING))
        mlflow.setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its level when it is imported
    try:
        yield log_path
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for handler, level in zip(consoles, levels):
            handler.setLevel(level)
        mlflow.setLevel(mlflow_level)
        if mlflow_env is None:
            os.environ.pop("MLFLOW_LOGGING_LEVEL", None)


def _die_with_parent() -> None:
    """Runs in the server's process before it starts: ask the kernel to stop it with its parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def prefect_server(wait: bool = True):
    """The configured Prefect server, or a temporary one bound to this process's life. Yields
    ``ready()``, which returns once the server answers; ``wait=False`` starts it in the background
    (10-20 s) so the caller can do other work first, and calls ``ready()`` before its first flow."""
    from prefect.server.api import server as prefect_server_module
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield lambda: None
        return

    # The server's own output (its services report in-flight events cancelled at shutdown as
    # tracebacks) goes to a file in the project, not after the run's results on the console.
    log_path = Path(".prefect") / "temporary-server.log"
    log_path.parent.mkdir(exist_ok=True)

    class _Popen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            # its own session: a terminal's Ctrl-C reaches the flow, which ends cleanly and then
            # stops the server; the server no longer dies first under the flow's last API calls
            with open(log_path, "ab") as log:
                super().__init__(*args, preexec_fn=_die_with_parent, start_new_session=True, stdout=log,
                                 stderr=subprocess.STDOUT, **kwargs)

    class LinkedServer(prefect_server_module.SubprocessASGIServer):
        def _run_uvicorn_command(self):
            real = prefect_server_module.subprocess
            prefect_server_module.subprocess = _SubprocessShim(real, _Popen)
            try:
                return super()._run_uvicorn_command()
            finally:
                prefect_server_module.subprocess = real

    server = LinkedServer()
    failed: list[BaseException] = []
    started, done = threading.Event(), threading.Event()

    def start() -> None:
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - handed to ready(), which raises it in the caller's thread
            failed.append(exc)
        started.set()
        # the kernel's parent-death signal follows the thread that started the server, not the
        # process: this thread lives as long as the server may
        done.wait()

    starting = threading.Thread(target=start, name="prefect-server", daemon=True)
    starting.start()
    settings = ExitStack()
    using: list[bool] = []

    def ready() -> None:
        started.wait()
        if failed:  # its own output is in the log, not on the console
            raise PsaqError(f"the temporary Prefect server did not start ({failed[0]}); its output is in {log_path}; "
                            "or start one (make prefect-server) and set PREFECT_API_URL") from failed[0]
        if not using:
            settings.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
            using.append(True)

    try:
        if wait:
            ready()
        try:
            yield ready
        finally:
            if using:
                _send_queued_logs()
            settings.close()
    finally:
        started.wait()
        server.stop()
        done.set()


def _send_queued_logs() -> None:
    """Ship the run's queued log records while the temporary server still runs: otherwise Prefect
    tries at exit, finds it gone and prints 'Error logging to API' after a run that succeeded."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)


class _SubprocessShim:
    """The subprocess module as Prefect's server launcher sees it, with our Popen."""

    def __init__(self, real, popen):
        self._real, self.Popen = real, popen

    def __getattr__(self, name):
        return getattr(self._real, name)


def run_entry(main: Callable[[], int], debug: bool) -> int:
    """Run a flow command: one line per error, a clean store. ``main`` checks its input, then runs
    its flow inside ``prefect_server()`` (so bad input is refused before a server starts)."""
    from psaq.store import Store
    from tasks.settings import project_root

    def guarded() -> int:
        Store(project_root()).clean_stale()
        with ExitStack() as stack:
            if not debug:
                stack.enter_context(quiet_prefect_errors())
            return main()

    return run_psaq_entry(guarded, debug)

