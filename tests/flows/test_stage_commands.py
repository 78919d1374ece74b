"""The DVC stage commands (`python -m flows.dvc_stages STAGE`) run out of order or with bad input: one line."""

import pytest

from flows.dvc_stages import main


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("model:\n  model_args: {depth: 1}\n")
    return tmp_path


@pytest.mark.parametrize("argv,message", [
    (["fp32"], "stage 'model' has not run (pipeline/models/m0.json is missing): run `dvc repro`"),
    (["samples", "--method", "psaq", "--seed", "0"], "stage 'model' has not run"),
    (["samples", "--method", "x", "--seed", "0"], "unknown calibration mode 'x'"),
    (["calibrate", "--method", "psaq", "--seed", "0", "--bits", "W8A8", "--observer", "minmax"],
     "stage 'model' has not run"),
])
def test_a_stage_run_out_of_order_or_misnamed_is_one_line(project, argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("psaq: error:") and message in err and "\n" not in err, err


def test_a_misnamed_stage_is_one_line(project, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["nosuch"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("psaq: error:") and "invalid choice: 'nosuch'" in err
    assert "\n" not in err


def test_a_view_edited_in_place_is_refused(project):
    """Views are hard links into the store: an edit in place reaches the store file too, and the
    next stage command must not feed it on."""
    from flows.dvc_stages import read_view, view
    from psaq.errors import ArtifactError
    from psaq.stages.graph import GRAPH
    from psaq.store import Store

    store = Store(project)
    artifact, built = store.publish(store.path(GRAPH["samples"].folder, "digits-vit-psaq-s0", "k", ".parquet"),
                                    lambda tmp: tmp.write_bytes(b"samples"))
    item = dict(train_seed=0, method="psaq", seed=0)
    store.link_view(artifact, view("samples", **item))
    assert read_view("samples", **item).sha256 == artifact.sha256
    with open(view("samples", **item), "r+b") as f:  # in place: the store's file changes with it
        f.write(b"S")
    with pytest.raises(ArtifactError, match="is not what stage 'samples' published .*edited in place"):
        read_view("samples", **item)


def test_a_grid_with_a_site_set_passes_the_dvc_check_and_a_tag_dvc_cannot_name_is_refused(project, capsys):
    """A site set follows '+' (W4A4+repq), which DVC's matrix stage names hold; the '@' of earlier
    tags, which DVC splits names at, is refused in one line with the spelling to use."""
    (project / "params.yaml").write_text("grid:\n  bits: [W8A8, W4A4+repq]\n")
    assert main(["check-params"]) == 0
    (project / "params.yaml").write_text("grid:\n  bits: [W8A8, W4A4@repq]\n")
    assert main(["check-params"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("psaq: error:") and "write W4A4+repq" in err and "\n" not in err


def test_dvcs_own_reason_reaches_the_one_line():
    from flows.dvc_stages import dvc_reason

    assert dvc_reason("", "ERROR: failed to commit - unable to find 'a.json'\n", 255) == \
        "failed to commit - unable to find 'a.json'"
    assert dvc_reason("Committing\nERROR: lock is held by another process\n", "", 255) == "lock is held by another process"
    assert dvc_reason("something went wrong\n", "", 1) == "something went wrong"
    assert dvc_reason("", "", 3) == "exit status 3, nothing printed"


@pytest.mark.cost(40)
def test_points_dvc_computes_reach_mlflow_with_a_parent_that_shows_them(project, monkeypatch, capsys):
    import mlflow

    (project / "params.yaml").write_text(
        "model:\n  model_args: {depth: 1}\ntrain: {epochs: 1}\nsynthesis: {num_samples: 4}\n"
        "grid: {methods: [gaussian], seeds: [0], bits: [W8A8], export: true}\nruntime: {device: cpu}\n"
        "tracking: {register: true}\n")
    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PSAQ_PROJECT", str(project))
    point = ["--method", "gaussian", "--seed", "0", "--bits", "W8A8", "--observer", "minmax"]
    for argv in (["model"], ["data"], ["fp32"], ["samples", "--method", "gaussian", "--seed", "0"],
                 ["calibrate", *point], ["reconstruct", *point], ["evaluate", *point], ["export", *point], ["report"]):
        assert main(argv) == 0, argv
    out = capsys.readouterr().out
    assert "report: MLflow run 'dvc repro'" in out and "with 1 points, 1 logged now" in out, out
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("psaq").experiment_id
    [parent] = client.search_runs([exp], "tags.`psaq.flow` = 'dvc repro'")
    assert parent.info.status == "FINISHED" and "summary.W8A8.gaussian" in parent.data.metrics
    [child] = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert round(child.data.metrics["eval.top1"], 2) == parent.data.metrics["summary.W8A8.gaussian"]
    assert client.get_model_version_by_alias("digits-vit-W8A8", "best").run_id == child.info.run_id
    # the report again (dvc repro --force): a second parent, its point linked, not logged again
    assert main(["report"]) == 0
    assert "with 1 points, 0 logged now" in capsys.readouterr().out
