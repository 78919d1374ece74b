"""The stop flag: set by SIGINT/SIGTERM, even when someone else (Prefect) installs its own handler."""

import os
import signal

import pytest

from psaq import cancel
from psaq.errors import Interrupted


@pytest.fixture(autouse=True)
def cleared():
    yield
    cancel._REQUESTED.clear()  # a stop left requested would interrupt the next test's loops


def test_sigterm_requests_a_stop_and_interrupts_the_main_thread():
    with pytest.raises(KeyboardInterrupt):
        with cancel.stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(Interrupted):
        cancel.check()


def test_a_handler_installed_later_cannot_swallow_the_stop():
    install, seen = signal.signal, []
    with cancel.stop_on_signals():
        # as Prefect's flow engine does: its own SIGTERM handler, which does not stop our loops
        signal.signal(signal.SIGTERM, lambda sig, frame: seen.append(sig))
        cancel.check()  # nothing requested yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]
        with pytest.raises(Interrupted):
            cancel.check()
    assert signal.signal is install


def test_handlers_are_restored_afterwards():
    before = signal.getsignal(signal.SIGTERM)
    with cancel.stop_on_signals():
        pass
    assert signal.getsignal(signal.SIGTERM) == before
