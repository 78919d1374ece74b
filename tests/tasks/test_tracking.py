"""MLflow logging: one nested run per grid point, keyed by the point, never by its result bytes."""

from tasks.tracking import log_point  # a Prefect task: its .fn, the function itself, runs here


def record(metrics_name: str, digest: str = "a" * 64) -> dict:
    return {"metrics": f"/store/metrics/{metrics_name}", "metrics_sha256": digest, "top1": 50.0, "top5": 90.0,
            "agreement": 60.0, "fp32_top1": 70.0}


def test_points_with_byte_identical_results_get_a_run_each_and_a_rerun_reuses_its_own(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    client.create_experiment("psaq")
    parent = client.create_run(client.get_experiment_by_name("psaq").experiment_id).info.run_id
    first, reused_a = log_point.fn(uri, "psaq", parent, "W8A8", {}, record("psaq-s0-W8A8-1111.json"), {}, {})
    second, reused_b = log_point.fn(uri, "psaq", parent, "W8A8 seed 1", {}, record("psaq-s1-W8A8-2222.json"), {}, {})
    assert not reused_a and not reused_b and first != second  # same bytes, two points: two runs
    again, reused = log_point.fn(uri, "psaq", parent, "W8A8", {}, record("psaq-s0-W8A8-1111.json"), {}, {})
    assert reused and again == first
    changed, reused = log_point.fn(uri, "psaq", parent, "W8A8", {}, record("psaq-s0-W8A8-1111.json", "b" * 64), {}, {})
    assert not reused and changed != first  # the same point with another result is logged anew


def test_the_printed_link_opens_the_experiments_runs_table(tmp_path, monkeypatch):
    # this MLflow UI picks its landing view from the URL's workflowType (default "genai": the
    # GenAI overview, no runs); the link names the experiment and the machine-learning view
    import mlflow

    from tasks.tracking import runs_page

    monkeypatch.setenv("PSAQ_PROJECT", str(tmp_path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    url = runs_page(uri, "psaq")
    exp = mlflow.tracking.MlflowClient(tracking_uri=uri).get_experiment_by_name("psaq")
    assert url == (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
                   "&viewStateShareKey=psaq-grid")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_links_view_shows_columns_a_grid_point_logs_grouped_by_the_run_that_made_it(tmp_path, monkeypatch):
    # the UI applies the experiment tag mlflow.sharedViewState.<viewStateShareKey>: its columns
    # must name params and metrics that a point's run really has, or the table shows empty columns
    import json

    import mlflow

    from flows.grid import point_params
    from psaq.params import Params
    from psaq.pipeline import grid_points
    from tasks.tracking import MADE_BY_TAG, VIEW_KEY, runs_page

    monkeypatch.setenv("PSAQ_PROJECT", str(tmp_path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs_page(uri, "psaq")
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("psaq")
    view = json.loads(exp.tags[f"mlflow.sharedViewState.{VIEW_KEY}"])
    params = Params()
    parent = client.create_run(exp.experiment_id, run_name="grid").info.run_id
    run_id, _ = log_point.fn(uri, "psaq", parent, "W8A8", point_params(params, grid_points(params)[0]),
                             record("psaq-s0-W8A8-1111.json"), {}, {})
    run = client.get_run(run_id)
    names = {f"params.`{k}`" for k in run.data.params} | {f"metrics.`{k}`" for k in run.data.metrics}
    missing = [c for c in view["selectedColumns"] if c not in names]
    assert not missing and any(c.startswith("metrics.") for c in view["selectedColumns"])
    [key] = view["groupBy"]["groupByKeys"]
    assert key == {"mode": "tag", "groupByData": MADE_BY_TAG} and run.data.tags[MADE_BY_TAG].startswith("grid ")


def _tiny_onnx(path) -> str:
    """A one-node ONNX classifier stand-in: (N, 3, 4, 4) images → (N, 3) scores."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return str(path)


def test_a_points_onnx_is_an_mlflow_model_and_the_best_data_free_point_is_registered_once(tmp_path):
    import mlflow

    from tasks.tracking import register_best

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    client.create_experiment("psaq")
    parent = client.create_run(client.get_experiment_by_name("psaq").experiment_id).info.run_id
    onnx_file = _tiny_onnx(tmp_path / "point-0123abcd.onnx")
    points = [dict(record(f"{m}-s0-W8A8-{i}.json"), method=m, seed=0, bits="W8A8", top1=top1, onnx=onnx_file)
              for i, (m, top1) in enumerate((("gaussian", 80.0), ("psaq", 85.0), ("real", 90.0)))]
    runs = [log_point.fn(uri, "psaq", parent, f"W8A8 {p['method']}", {}, p, {},
                         {"metrics.json": __file__, "model.onnx": onnx_file})[0] for p in points]
    logged = client.get_run(runs[1])
    assert [a.path for a in client.list_artifacts(runs[1])] == ["metrics.json"]  # a readable name, not the store's
    model = mlflow.models.get_model_info(logged.data.tags["psaq.model_uri"])
    assert model.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3, 4, 4)  # batch axis left free
    # real images are data: the best data-free point is psaq's, though real scores higher
    [said] = register_best.fn(uri, "tiny", points, runs)
    assert said.startswith("tiny-W8A8 v1 @best: psaq seed 0, top-1 85.00")
    assert client.get_model_version_by_alias("tiny-W8A8", "best").run_id == runs[1]
    [again] = register_best.fn(uri, "tiny", points, runs)  # a rerun with the same best adds no version
    assert again.endswith("(already registered)") and len(client.search_model_versions("name='tiny-W8A8'")) == 1


def test_a_parent_shows_its_points_and_summary_even_when_every_point_was_logged_before(tmp_path):
    import json

    import mlflow

    from tasks.tracking import summarize_parent

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    client.create_experiment("psaq")
    exp = client.get_experiment_by_name("psaq").experiment_id
    first, again = (client.create_run(exp).info.run_id for _ in range(2))
    rec = dict(record("psaq-s0-W8A8-1111.json"), method="psaq", seed=0, bits="W4A4+repq", observer="minmax", train_seed=0)
    point, _ = log_point.fn(uri, "psaq", first, "W4A4+repq", {}, rec, {}, {})
    summary = {"fp32_top1": 70.0, "columns": ["W4A4+repq"], "top1": {"psaq": {"W4A4+repq": {"mean": 50.0, "std": 0.0, "n": 1}}},
               "comparisons": []}
    summarize_parent.fn(uri, again, summary, "| the headline |", [rec], [point])  # the rerun: its point was logged before
    run = client.get_run(again)
    assert run.data.metrics == {"summary.fp32": 70.0, "summary.W4A4-repq.psaq": 50.0}  # '+' is refused in names
    assert run.data.tags["mlflow.note.content"] == "| the headline |"
    path = mlflow.artifacts.download_artifacts(run_id=again, artifact_path="points.json", tracking_uri=uri)
    table = json.loads(open(path).read())
    assert table["columns"][-1] == "run" and table["data"][0][-1] == point
