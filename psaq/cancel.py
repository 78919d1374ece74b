"""Cooperative cancellation: Ctrl-C or SIGTERM stops long loops within one step, in any thread.

A signal handler runs only in the main thread, while the pipeline's stages may run in worker
threads; so the handler sets an event that the training, synthesis, calibration and
evaluation loops check every step, and they stop with ``Interrupted``. Artifacts are written to
temporary files, so nothing half-written is published.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from psaq.errors import Interrupted

_REQUESTED = threading.Event()
_DONE = threading.Event()


def check() -> None:
    """Raise ``Interrupted`` once a stop was requested."""
    if _REQUESTED.is_set():
        raise Interrupted("interrupted; rerun to continue from the finished stages")


def request() -> None:
    _REQUESTED.set()


def work_done() -> None:
    """The work is finished and recorded (the MLflow run closed FINISHED): a signal from now on
    no longer turns the run into "interrupted", exit 130, which would contradict the record; the
    process goes on printing its results and exits as it would have."""
    _DONE.set()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGINT and SIGTERM request a stop and raise KeyboardInterrupt in the main thread.

    Handlers that others install meanwhile for these signals (Prefect's flow engine installs
    its own for SIGTERM, which stops the flow but not the stage running in a worker thread)
    are wrapped so that they request the stop first: no handler can swallow it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if _DONE.is_set():
            return
        request()
        raise KeyboardInterrupt

    install = signal.signal

    def install_chained(signum, new):
        if signum in STOP_SIGNALS and callable(new):
            inner = new

            def new(sig, frame):
                if _DONE.is_set():
                    return None
                request()
                return inner(sig, frame)
        return install(signum, new)

    previous = {s: install(s, handler) for s in STOP_SIGNALS}
    _REQUESTED.clear()
    _DONE.clear()
    signal.signal = install_chained
    try:
        yield
    finally:
        signal.signal = install
        for s, h in previous.items():
            install(s, h)
