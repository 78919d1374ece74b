"""The flows end to end under a Prefect test server, on a tiny self-trained digits-vit."""

import pytest

from tests.flows.conftest import write_params

pytestmark = pytest.mark.slow

STAGES = {"train-digits-vit", "synthesize", "evaluate-fp32", "calibrate", "evaluate", "export", "report"}


def stage_states(flow_state) -> dict[str, list[str]]:
    """Task name → the state names its runs ended in, read back from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        flow_run_id = flow_state.state_details.flow_run_id
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    out: dict[str, list[str]] = {}
    for run in runs:
        base = run.name.rsplit("-", 1)[0]
        out.setdefault(base, []).append(run.state.name)
    return out


def test_benchmark_runs_caches_and_reruns_only_what_changed(project):
    from flows.benchmark import benchmark

    params = write_params(project)
    state = benchmark(str(params), return_state=True)
    result = state.result()
    records = result["records"]
    assert len(records) == 4 and {r["method"] for r in records} == {"psaq", "gaussian"}
    assert all(0 <= r["top1"] <= 100 and r["agreement"] is not None for r in records)
    for name in ("benchmark.md", "samples.png", "similarity.png", "accuracy.png", "summary.json"):
        assert (project / "reports" / name).stat().st_size > 0
    assert "| psaq |" in result["table"]
    first = stage_states(state)
    assert STAGES <= set(first)

    # unchanged: every stage comes from the cache
    second = stage_states(benchmark(str(params), return_state=True))
    for stage in STAGES:
        assert set(second[stage]) == {"Cached"}, (stage, second[stage])

    # a new activation bit width: synthesis, training and the FP32 evaluation are reused
    write_params(project, grid={"bits": ["W8A8", "W4A6"]})
    third = stage_states(benchmark(str(params), return_state=True))
    for stage in ("train-digits-vit", "synthesize", "evaluate-fp32"):
        assert set(third[stage]) == {"Cached"}, (stage, third[stage])
    assert "Completed" in third["calibrate"] and "Cached" in third["calibrate"]
    assert "Completed" in third["evaluate"]
    assert third["report"] == ["Completed"]


def test_deleted_artifact_is_rebuilt_not_served_from_cache(project):
    from flows.quantize import quantize

    params = write_params(project)
    first = quantize(calib="gaussian", params_path=str(params))
    samples = next((project / "data" / "samples").glob("*gaussian*.parquet"))
    samples.unlink()
    second = quantize(calib="gaussian", params_path=str(params))
    assert samples.exists() and second["top1"] == first["top1"]


def test_mlflow_parent_and_nested_runs(project):
    import mlflow

    from flows.grid import grid

    params = write_params(project, grid={"methods": ["psaq"], "bits": ["W8A8", "W4A8"]})
    grid(str(params))
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("psaq")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    child = children[0]
    assert {"top1", "top5", "agreement", "synthesis_wall_s"} <= set(child.data.metrics)
    assert child.data.params["quant.w_bits"] in {"8", "4"}
    curve = client.get_metric_history(child.info.run_id, "synthesis_loss")
    assert len(curve) == 8 and [m.step for m in curve] == list(range(8))
    names = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert any(n.endswith(".json") for n in names) and any(n.endswith(".int.safetensors") for n in names)
    assert any(n.endswith(".onnx") for n in names)
    assert parents[0].data.params["synthesis.steps_per_round"] == "4"


def test_dask_runner_maps_a_small_grid(project):
    from flows.grid import grid, task_runner
    from tasks.params import load_params

    params = write_params(project, grid={"methods": ["gaussian"], "bits": ["W8A8", "W4A8"]},
                          tracking={"enabled": False})
    runner = task_runner(load_params(params), dask=True)
    assert type(runner).__name__ == "DaskTaskRunner"
    # the local cluster and its dashboard listen on loopback only
    assert runner.cluster_kwargs["host"] == "127.0.0.1" and runner.cluster_kwargs["dashboard_address"].startswith("127.0.0.1:")
    records = grid.with_options(task_runner=runner)(str(params), threads=1)
    assert sorted(r["bits"] for r in records) == ["W4A8", "W8A8"]


def test_bad_params_fail_before_any_work(project, capsys):
    from flows.grid import main

    params = write_params(project, quant={"a_bits": 12})
    assert main(["--params", str(params)]) == 2
    assert "a_bits must be from 2 to 8" in capsys.readouterr().err
    assert not (project / "data").exists()


def test_quantize_flow_passes_speed_options_to_the_synthesis_stage(project):
    from flows.quantize import quantize
    from psaq.io import read_samples

    params = write_params(project)
    record = quantize(calib="psaq", precision="bf16", compile="kde", params_path=str(params))
    assert 0 <= record["top1"] <= 100
    [path] = (project / "data" / "samples").glob("*psaq*.parquet")
    config = read_samples(path).metadata["config"]
    assert config["precision"] == "bf16" and config["compile"] == "kde" and config["cuda_graphs"] is False
