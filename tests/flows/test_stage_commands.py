"""The DVC stage commands (`python -m flows.stages STAGE`) run out of order or with bad input: one line."""

import pytest

from flows.stages import main


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
