"""Runs take the cores in turn: one slot for every run on a shared Prefect server.

Two benchmark runs side by side on a 2-core machine each run at half speed or worse (torch
threads oversubscribed), and a scheduled run would collide with one started by hand. Each
deployment declares a concurrency limit of one (``flows.serve.one_slot``): its later runs wait
visibly, in submission order, as AwaitingConcurrencySlot. Across deployments and flows, every
run on a shared server (a deployment run, or ``make run`` with ``PREFECT_API_URL`` set) holds
the one slot of the global limit ``psaq-cores`` for its whole run. A run on the temporary server
``make run`` starts shares that server with no one, and takes no slot.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

CORES_LIMIT = "psaq-cores"  # the global concurrency limit's name on the Prefect server


def create_limit() -> None:
    """The limit, on the configured server (created, or reset to one slot)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(CORES_LIMIT, 1)


def ensure_limit() -> None:
    """The limit, created with one slot where the server lacks it (an existing one is kept as is).

    Two runs that start together may both find no limit; the second create is then refused as
    already existing, which is what it wanted.
    """
    from prefect import get_client
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(CORES_LIMIT)
        except ObjectNotFound:
            try:
                client.upsert_global_concurrency_limit_by_name(CORES_LIMIT, 1)
            except ObjectAlreadyExists:
                pass  # created by a run that started at the same moment


def on_shared_server() -> bool:
    """A server the user configured (``PREFECT_API_URL`` in the environment), not the temporary
    one a flow command starts for itself."""
    return bool(os.environ.get("PREFECT_API_URL"))


def one_at_a_time(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Under ``@flow``: a run on a shared server holds the ``psaq-cores`` slot while it runs."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        from prefect.runtime import deployment

        if not (deployment.id or on_shared_server()):
            return fn(*args, **kwargs)
        from prefect.concurrency.sync import concurrency

        ensure_limit()

        with concurrency(CORES_LIMIT, occupy=1):
            return fn(*args, **kwargs)

    return run
