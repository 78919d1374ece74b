"""The console of a flow command: per-task log lines to a file, warnings still on screen."""

import logging

import prefect  # noqa: F401 - configures Prefect's logging, as every flow module does

from flows.entry import console


def _console_handlers():
    from prefect.logging.handlers import PrefectConsoleHandler

    return [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]


def test_task_lines_go_to_the_file_and_warnings_stay_on_the_console(tmp_path):
    handlers = _console_handlers()
    assert handlers, "Prefect's console handler is not on the root logger"
    before = [h.level for h in handlers]
    logger = logging.getLogger("prefect.psaq_test")  # as a task run logs, without its API handler
    with console(verbose=False, log_path=tmp_path / "runs.log") as path:
        assert all(h.level >= logging.WARNING for h in handlers)
        logger.info("evaluate built")
        logger.warning("something to see")
    text = path.read_text()
    assert "evaluate built" in text and "something to see" in text
    assert [h.level for h in handlers] == before  # restored
    with console(verbose=True, log_path=tmp_path / "verbose.log"):
        assert [h.level for h in handlers] == before
