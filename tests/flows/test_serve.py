"""The deployments, served or on a work pool: one slot each, the schedules recheck and compare."""

import uuid


def test_deployments_on_a_pool_declare_one_queued_slot_and_the_scheduled_ones_recheck(prefect_server):
    from prefect import get_client

    from flows.serve import SCHEDULED, deploy_to_pool

    pool = f"psaq-test-{uuid.uuid4().hex[:8]}"
    names = deploy_to_pool(pool)
    assert names == ["quantize/quantize", "benchmark/default", *(f"benchmark/{n}" for n in SCHEDULED)]
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool).type == "process"
        for name in names:
            d = client.read_deployment_by_name(name)
            assert d.work_pool_name == pool
            assert d.global_concurrency_limit.limit == 1 and d.concurrency_options.collision_strategy == "ENQUEUE"
            scheduled = name.split("/")[1] in SCHEDULED
            assert bool(d.schedules) == scheduled
            assert d.parameters.get("recheck", False) == scheduled  # a scheduled run evaluates again
