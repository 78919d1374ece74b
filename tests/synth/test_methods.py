"""Calibration modes declare what they can do, and every caller asks the mode, not its name."""

import pytest

from psaq.synth.methods import SYNTH_METHODS, method, method_of


def test_the_built_in_modes_declare_what_the_paper_and_the_official_code_do():
    assert [m for m in SYNTH_METHODS if method_of(m).needs_data] == ["real"]
    assert {m for m in SYNTH_METHODS if method_of(m).iterates} == {"psaq", "psaq-noent", "psaq-v2", "psaq-unique-pairs"}
    assert [m for m in SYNTH_METHODS if method_of(m).co_evolves] == ["psaq-v2"]


@pytest.fixture
def toy_modes():
    """Two modes under new names: one reads data, one iterates and co-evolves; removed afterwards."""
    def draw(config, ctx):
        raise AssertionError("not run here")

    method("toy-data", needs_data=True)(draw)
    method("toy-evolving", iterates=True, co_evolves=True)(draw)
    yield
    for name in ("toy-data", "toy-evolving"):
        SYNTH_METHODS._items.pop(name)


def test_the_plan_asks_the_mode_what_it_costs(toy_modes):
    from psaq.budget import Speeds, Work, task_seconds

    work = Work("m", 0, 0, 0, {"toy-evolving": 1}, 10, 1, 100, adaptive_points=1, adaptive_steps=7)
    speeds = Speeds(0.0, {"toy-evolving": 0.5}, 0.0, 0.0, adaptive_step_s=2.0)
    assert task_seconds("reconstruct", "toy-evolving", work, speeds) == 14.0  # its rounds, as psaq-v2's
    assert task_seconds("reconstruct", "psaq", work, speeds) == 0.0
    assert task_seconds("samples", "toy-evolving", work, speeds) == 5.0


def test_a_mode_that_reads_data_is_never_registered_as_data_free(toy_modes, tmp_path):
    import mlflow

    from tasks.tracking import MODEL_TAG, register_best

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("psaq")
    run = client.create_run(exp).info.run_id
    client.set_tag(run, MODEL_TAG, "models:/m-0")
    records = [{"method": "toy-data", "bits": "W8A8", "observer": "minmax", "top1": 99.0, "seed": 0, "onnx": "x.onnx"}]
    assert register_best.fn(uri, "tiny", records, [run]) == []  # nothing data-free to register
