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
    first, reused_a = log_point.fn(uri, "psaq", parent, "W8A8", {}, record("psaq-s0-W8A8-1111.json"), {}, [])
    second, reused_b = log_point.fn(uri, "psaq", parent, "W8A8 seed 1", {}, record("psaq-s1-W8A8-2222.json"), {}, [])
    assert not reused_a and not reused_b and first != second  # same bytes, two points: two runs
    again, reused = log_point.fn(uri, "psaq", parent, "W8A8", {}, record("psaq-s0-W8A8-1111.json"), {}, [])
    assert reused and again == first
    changed, reused = log_point.fn(uri, "psaq", parent, "W8A8", {}, record("psaq-s0-W8A8-1111.json", "b" * 64), {}, [])
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
                             record("psaq-s0-W8A8-1111.json"), {}, [])
    run = client.get_run(run_id)
    names = {f"params.`{k}`" for k in run.data.params} | {f"metrics.`{k}`" for k in run.data.metrics}
    missing = [c for c in view["selectedColumns"] if c not in names]
    assert not missing and any(c.startswith("metrics.") for c in view["selectedColumns"])
    [key] = view["groupBy"]["groupByKeys"]
    assert key == {"mode": "tag", "groupByData": MADE_BY_TAG} and run.data.tags[MADE_BY_TAG].startswith("grid ")
