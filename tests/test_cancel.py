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
    cancel._DONE.clear()


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


def test_a_signal_after_the_work_is_recorded_is_not_an_interruption():
    # the flows call work_done() once their MLflow runs are closed FINISHED; a SIGTERM while the
    # temporary server stops must not print "interrupted" and exit 130 for that finished run
    from psaq.cli import run_entry

    def work():
        cancel.work_done()
        os.kill(os.getpid(), signal.SIGTERM)
        cancel.check()  # no stop requested
        return 0

    assert run_entry(work, debug=False) == 0


def test_before_the_work_is_done_the_same_signal_interrupts(capsys):
    from psaq.cli import run_entry

    def work():
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

    assert run_entry(work, debug=False) == 130
    assert "interrupted" in capsys.readouterr().err


def test_each_run_starts_not_done():
    cancel.work_done()
    with pytest.raises(KeyboardInterrupt):
        with cancel.stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
