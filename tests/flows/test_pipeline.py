"""The flows end to end under a Prefect test server, on a tiny self-trained digits-vit."""

import pytest

from tests.flows.conftest import write_params

pytestmark = pytest.mark.slow

STAGES = {"model", "fp32", "samples", "calibrate", "evaluate", "export", "report"}


def stage_states(flow_state, expect: frozenset[str] = frozenset(STAGES | {"reconstruct"})) -> dict[str, list[str]]:
    """Stage → the state names its task runs ended in, read back from the Prefect API (waiting,
    up to 60 s, until a task run of every ``expect`` stage is there and all are final)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    import time

    with get_client(sync_client=True) as client:
        flow_run_id = flow_state.state_details.flow_run_id
        for _ in range(300):  # the server records task-run states from events, a moment after they happen
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if (expect <= {r.name.split("-")[0] for r in runs}
                    and all(r.state is not None and r.state.is_final() for r in runs)):
                break
            time.sleep(0.2)
    out: dict[str, list[str]] = {}
    for run in runs:
        out.setdefault(run.name.split("-")[0], []).append(run.state.name)
    return out


def mlflow_runs(project):
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("psaq")
    return client, exp, client.search_runs([exp.experiment_id])


@pytest.mark.cost(18)
def test_benchmark_caches_reruns_only_what_changed_and_logs_each_result_once(project, monkeypatch, capsys):
    from flows.benchmark import benchmark

    params = write_params(project)
    state = benchmark(str(params), return_state=True)
    result = state.result()
    records = result["records"]
    assert len(records) == 4 and {r["method"] for r in records} == {"psaq", "gaussian"}
    assert all(0 <= r["top1"] <= 100 and r["agreement"] is not None for r in records)
    for name in ("benchmark.md", "samples.png", "similarity.png", "accuracy.png", "differences.png", "summary.json"):
        assert (project / "reports" / "digits-vit" / name).stat().st_size > 0
    assert "| psaq |" in result["table"] and result["table"].startswith("What psaq's images change")
    assert "psaq − gaussian" in (project / "reports" / "digits-vit" / "benchmark.md").read_text()
    assert STAGES <= set(stage_states(state))
    client, exp, runs = mlflow_runs(project)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(nested) == 4
    child = nested[0]
    assert {"eval.top1", "eval.top5", "eval.agreement", "synthesis.wall_s"} <= set(child.data.metrics)
    assert child.data.params["quant.w_bits"] in {"8", "4"} and child.data.params["point.bits"] in {"W8A8", "W4A8"}
    assert child.data.tags["mlflow.runName"].startswith("digits-vit ")
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.params["grid.bits"] == '["W8A8", "W4A8"]' and "quant.w_bits" not in parent.data.params

    assert result["changes"] is None  # the first run: nothing to compare with (no commit, no earlier run)
    # the Prefect artifact: the headline, then links to the report and the MLflow runs table
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    assert artifact.key == "benchmark-digits-vit" and artifact.data.startswith("What psaq's images change")
    assert "- Report: [" in artifact.data and "- MLflow: [the runs table](http://127.0.0.1:5000/#/experiments/" in artifact.data

    # unchanged: every stage comes from the store, and MLflow gets no new nested runs
    second_state = benchmark(str(params), return_state=True)
    second = stage_states(second_state)
    # compared with the previous run's figures (the project is no git repository): all equal
    assert second_state.result()["changes"] == "all 6 figures equal the previous run's"  # 2 methods × 2 settings + 2 differences
    assert "| top-1 psaq | W8A8 |" in (project / "reports" / "digits-vit" / "changes.md").read_text()
    for stage in STAGES:
        assert set(second[stage]) == {"Cached"}, (stage, second[stage])
    assert set(second["reconstruct"]) == {"Skipped"}  # off: it hands the calibrated model on
    runs = mlflow_runs(project)[2]
    nested_ids = {r.info.run_id for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert len(nested_ids) == 4
    newest_parent = max((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    assert set(newest_parent.data.tags["psaq.reused_runs"].split(",")) == nested_ids  # it says which runs hold its points
    # and shows them: the headline, the tracked figures, the comparison (never an empty parent)
    assert newest_parent.data.tags["mlflow.note.content"] == result["table"]
    assert {"summary.fp32", "summary.W8A8.psaq", "summary.W4A8.psaq_vs_gaussian", "changes.moved"} <= set(
        newest_parent.data.metrics)

    # what `make run` does when nothing changed: the stored report, verified, with no flow run
    from flows.benchmark import headline_of, main, stored_report
    from psaq.params import load_params

    views = stored_report(load_params(params), False)
    assert views is not None and views["benchmark.md"] == project / "reports" / "digits-vit" / "benchmark.md"
    assert headline_of(views).startswith("What psaq's images change")
    import flows.benchmark as entry

    def no_flow(*args, **kwargs):
        raise AssertionError("a grid the store holds must not start a flow")

    monkeypatch.setattr(entry.benchmark, "with_options", no_flow)
    assert main(["--params", str(params)]) == 0
    assert "nothing to compute, no flow run" in capsys.readouterr().out

    # a new activation bit width: the model, the sample sets and the FP32 evaluation are reused
    write_params(project, grid={"bits": ["W8A8", "W4A6"]})
    assert stored_report(load_params(params), False) is None  # W4A6 is not in the store yet
    third = stage_states(benchmark(str(params), return_state=True))
    for stage in ("model", "samples", "fp32"):
        assert set(third[stage]) == {"Cached"}, (stage, third[stage])
    assert "Completed" in third["calibrate"] and "Cached" in third["calibrate"]
    assert third["report"] == ["Completed"]


@pytest.mark.cost(30)  # trains its own digits-vit: started early, it does not end the run alone
def test_a_deleted_artifact_is_rebuilt(project):
    from flows.quantize import quantize

    params = write_params(project, tracking={"enabled": False})
    first = quantize(calib="gaussian", params_path=str(params))
    samples = next((project / "data" / "samples").glob("*gaussian*.parquet"))
    samples.unlink()
    second = quantize(calib="gaussian", params_path=str(params))
    assert samples.exists() and second["top1"] == first["top1"]


@pytest.mark.cost(22)
def test_dask_runner_maps_a_small_grid(project):
    from flows.grid import grid, task_runner
    from psaq.params import load_params

    # one worker process (each imports torch and psaq): enough to map the grid through Dask
    params = write_params(project, grid={"methods": ["gaussian"], "bits": ["W8A8", "W4A8"], "max_concurrency": 1},
                          tracking={"enabled": False})
    runner = task_runner(load_params(params), dask=True)
    assert type(runner).__name__ == "DaskTaskRunner"
    # the local cluster and its dashboard listen on loopback only
    assert runner.cluster_kwargs["host"] == "127.0.0.1" and runner.cluster_kwargs["dashboard_address"].startswith("127.0.0.1:")
    records = grid.with_options(task_runner=runner)(str(params), threads=1)
    assert sorted(r["bits"] for r in records) == ["W4A8", "W8A8"]


def test_bad_input_fails_before_any_work_in_one_line(project, capsys):
    from flows.grid import main

    for overrides, message in (({"quant": {"a_bits": 12}}, "a_bits must be from 2 to 8"),
                               ({"model": {"name": "deit_smal_patch16_224"}}, "did you mean deit_small_patch16_224"),
                               ({"runtime": {"dataset": str(project / "missing")}}, "missing' does not exist")):
        params = write_params(project, **overrides)
        assert main(["--params", str(params)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err
        assert not (project / "data").exists() and not (project / "mlflow.db").exists()


def test_quantize_flow_passes_speed_options_to_the_synthesis_stage(project, monkeypatch):
    """The plumbing: the flow's options reach the synthesis loop and its sample set's metadata.
    torch.compile itself is tested in tests/synth/test_acceleration.py; here it is recorded, not
    run (inductor's first compile costs 20-30 s)."""
    import torch

    from flows.quantize import quantize
    from psaq.io import read_samples

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(getattr(fn, "__name__", fn)) or fn)
    params = write_params(project, tracking={"enabled": False})
    state = quantize(calib="psaq", precision="bf16", compile="kde", params_path=str(params), return_state=True)
    record = state.result()
    assert 0 <= record["top1"] <= 100
    # what `prefect deployment run --watch` and the UI show: the result in the final state
    assert state.is_completed() and f"top-1 {record['top1']:.2f} %" in state.message and record["metrics"] in state.message
    assert compiled == ["kde_entropy"]
    [path] = (project / "data" / "samples").glob("*psaq*.parquet")
    config = read_samples(path).metadata["config"]
    assert config["precision"] == "bf16" and config["compile"] == "kde" and config["cuda_graphs"] is False


def test_deployment_parameters_are_validated_before_any_work(project):
    from flows.quantize import quantize

    params = write_params(project, tracking={"enabled": False})
    state = quantize(w_bits=12, params_path=str(params), return_state=True)
    assert state.is_failed() and "w_bits" in state.message and "less than or equal to 8" in state.message
    state = quantize(calib="gauss", params_path=str(params), return_state=True)
    assert state.is_failed() and "gaussian" in state.message
    # a psaq error inside the run: its one line is the state message, and a direct call raises it
    state = quantize(model="deit_smal_patch16_224", params_path=str(params), return_state=True)
    assert state.is_failed() and state.message.startswith("unknown model ") and "\n" not in state.message
    assert "did you mean deit_small_patch16_224" in state.message
    assert not (project / "data").exists()


@pytest.mark.parametrize("module, name", [("flows.quantize", "quantize"), ("flows.grid", "grid"),
                                          ("flows.benchmark", "benchmark")])
def test_every_deployment_parameter_is_described_in_the_served_schema(module, name):
    # Prefect serves the descriptions of a flow's Google-style "Args:" docstring section (a
    # pydantic Field(description=...) on the parameter is dropped from the schema)
    import importlib

    from prefect.utilities.callables import parameter_schema

    fn = getattr(importlib.import_module(module), name).fn
    properties = parameter_schema(fn).model_dump()["properties"]
    assert properties and all(p.get("description") for p in properties.values()), \
        [k for k, p in properties.items() if not p.get("description")]


@pytest.mark.cost(20)
def test_a_headless_backbone_through_the_deployment_parameter(project):
    """``-p headless=true``: the quantize flow scores the backbone by k-NN and logs its feature
    cosine to MLflow; a label-needing mode fails the run in one line before any work."""
    from flows.quantize import quantize

    params = write_params(project)
    state = quantize(calib="psaq", headless=True, params_path=str(params), return_state=True)
    assert state.is_failed() and "'psaq' draws a class per image" in state.message
    assert not (project / "data").exists()
    state = quantize(calib="psaq-v2", headless=True, v2_discrepancy="features", params_path=str(params),
                     return_state=True)
    record = state.result()
    assert 0.9 < record["feature_cosine"] <= 1.0 and record["knn_index"] > 0
    assert state.is_completed() and "(headless)" in state.message and "k-NN top-1" in state.message
    _, _, runs = mlflow_runs(project)
    [point] = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert point.data.metrics["eval.feature_cosine"] == pytest.approx(record["feature_cosine"])
    assert point.data.params["model.headless"] == "True" and point.data.params["adaptive.discrepancy"] == "features"
