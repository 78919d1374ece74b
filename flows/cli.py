"""The flow entry points fail the way the ``psaq`` command does (one line, exit 2)."""

from psaq.cli import run_entry

__all__ = ["run_entry"]
