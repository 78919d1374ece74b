"""Deployment runs hold the one psaq-cores slot; direct calls take none."""

import uuid

from flows.one_at_a_time import CORES_LIMIT, create_limit, ensure_limit, one_at_a_time


def _active_slots() -> int:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(CORES_LIMIT).active_slots


def test_a_deployment_run_holds_the_slot_while_it_runs_and_frees_it(prefect_server, monkeypatch):
    create_limit()
    create_limit()  # idempotent: serving again keeps one limit of one slot
    seen = []

    @one_at_a_time
    def run():
        seen.append(_active_slots())
        return "done"

    assert run() == "done" and seen == [0]  # called directly: no slot taken
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", str(uuid.uuid4()))
    assert run() == "done" and seen == [0, 1]
    assert _active_slots() == 0


def test_a_direct_run_on_a_shared_server_takes_the_slot_too(prefect_server, monkeypatch):
    """`make run` with PREFECT_API_URL set shares the cores with the deployment runs on that server."""
    seen = []

    @one_at_a_time
    def run():
        seen.append(_active_slots())
        return "done"

    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    assert run() == "done" and seen == [1]
    assert _active_slots() == 0


def test_two_runs_that_both_find_no_limit_both_go_on(prefect_server, monkeypatch):
    """The race two runs started together meet: each reads "no limit", the other creates it first."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.exceptions import ObjectNotFound

    create_limit()  # the other run's create, landed between this run's read and its own create

    def not_there_yet(self, name):
        raise ObjectNotFound(http_exc=Exception(name))

    monkeypatch.setattr(SyncPrefectClient, "read_global_concurrency_limit_by_name", not_there_yet)
    ensure_limit()  # refused as already existing, which is what it wanted
    monkeypatch.undo()
    assert _active_slots() == 0
