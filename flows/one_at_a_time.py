"""Deployment runs take the cores in turn: a global concurrency limit of one slot.

Two benchmark runs side by side on a 2-core machine each run at half speed or worse (torch
threads oversubscribed), and a scheduled run would collide with one started by hand. ``make
serve`` creates the limit; every deployment run of quantize, grid and benchmark holds its slot
for the whole run, and the others wait in Running until it is free. A flow called directly
(``python -m flows.benchmark``, ``make run``) takes no slot: its own process already decides
how many tasks run at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

CORES_LIMIT = "psaq-cores"  # the global concurrency limit's name on the Prefect server


def create_limit() -> None:
    """The limit, on the configured server (created, or reset to one slot)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(CORES_LIMIT, 1)


def one_at_a_time(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Under ``@flow``: a deployment run holds the ``psaq-cores`` slot while it runs."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        from prefect.runtime import deployment

        if not deployment.id:
            return fn(*args, **kwargs)
        from prefect.concurrency.sync import concurrency

        with concurrency(CORES_LIMIT, occupy=1):
            return fn(*args, **kwargs)

    return run
