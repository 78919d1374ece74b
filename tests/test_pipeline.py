"""The stage graph run inline (as the CLI and the DVC stages run it): keys, reuse, rebuilds."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from psaq.params import params_from_dict
from psaq.pipeline import Point, inline_runner, record, report_inputs, submit_points
from psaq.store import Store

TINY = {
    "model": {"model_args": {"depth": 1}},
    "train": {"epochs": 2},
    "synthesis": {"steps_per_round": 3, "warmup_steps": 1, "num_samples": 8},
    "grid": {"methods": ["psaq"], "seeds": [0], "bits": ["W8A8"]},
    "runtime": {"device": "cpu"},
}


def tiny(**sections):
    data = {k: dict(v) for k, v in TINY.items()}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return params_from_dict(data)


def run(store, params, points=None):
    log = []
    submit = inline_runner(store, progress=False, log=log.append)
    points = points or [Point.parse(0, "psaq", 0, "W8A8", "minmax")]
    jobs = submit_points(submit, params, points)
    return [record(j) for j in jobs], {line.split()[0]: line.split()[1] for line in log}, jobs


def test_rerun_reuses_every_stage_and_a_bit_change_reruns_only_what_follows(tmp_path):
    store, params = Store(tmp_path), tiny()
    first, built, _ = run(store, params)
    assert built.pop("reconstruct") == "passed"  # off by default: the calibrated model goes on as it is
    assert set(built.values()) == {"built"}
    again, reused, _ = run(store, params)
    assert reused.pop("reconstruct") == "passed"
    assert set(reused.values()) == {"reused"} and again == first
    _, changed, _ = run(store, params, [Point.parse(0, "psaq", 0, "W4A8", "minmax")])
    assert changed == {"model": "reused", "fp32": "reused", "samples": "reused", "calibrate": "built",
                       "reconstruct": "passed", "evaluate": "built", "export": "built"}


def test_a_corrupted_artifact_is_rebuilt_not_adopted(tmp_path):
    store, params = Store(tmp_path), tiny()
    first, _, jobs = run(store, params)
    weights = jobs[0]["model"].result()
    with open(weights.path, "r+b") as f:  # flip bytes in the trained model
        f.seek(200)
        f.write(b"\x00\x01\x02\x03")
    second, log, _ = run(store, params)
    assert log["model"] == "built"  # retrained from its inputs, not hashed and adopted
    assert second[0]["fp32_top1"] == first[0]["fp32_top1"] and second[0]["top1"] == first[0]["top1"]


def save_digits(root, limit=60):
    from tests.test_data import save_digits_as_pngs

    return save_digits_as_pngs(root, limit=limit)


def test_changing_the_evaluation_images_reruns_what_reads_them(tmp_path):
    from PIL import Image

    folder = save_digits(tmp_path / "digits")
    store, params = Store(tmp_path / "project"), tiny(runtime={"dataset": str(folder)})
    first, _, _ = run(store, params)
    assert first[0]["count"] == 60
    image = next(folder.rglob("*.png"))
    Image.new("L", (32, 32), 255).save(image)  # a changed file: same name, new content
    second, log, _ = run(store, params)
    assert log["fp32"] == "built" and log["evaluate"] == "built"
    assert log["samples"] == "reused" and log["calibrate"] == "reused"


def test_the_command_line_reuses_what_the_pipeline_made(tmp_path, monkeypatch, capsys):
    import yaml

    from psaq.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PSAQ_PROJECT", raising=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({k: dict(v) for k, v in TINY.items()}))
    params = tiny()
    run(Store(tmp_path), params)
    assert main(["quantize", "--w-bits", "8", "--a-bits", "8"]) == 0
    out = capsys.readouterr().out
    for stage in ("model", "fp32", "samples", "calibrate", "evaluate", "export"):
        assert f"stage         {stage:<10} reused" in out, out


def test_a_report_is_the_runs_own(tmp_path):
    """Params A, then B, then A: the report in reports/ is A's, B's, then A's again."""
    from psaq.stages import report
    from psaq.stages.report import publish_view

    store = Store(tmp_path)
    texts = []
    for bits in ("W8A8", "W4A8", "W8A8"):
        params = tiny(grid={"bits": [bits]})
        records, _, jobs = run(store, params, [Point.parse(0, "psaq", 0, bits, "minmax")])
        art, _ = report.run(store, **report_inputs(params, jobs, records), title=f"run {bits}")
        files = publish_view(art, tmp_path / "reports")
        texts.append(files["benchmark.md"].read_text())
    assert texts[0] == texts[2] != texts[1]
    assert "# run W8A8" in texts[2] and "| psaq |" in texts[2]


def test_weights_that_change_mid_run_are_refused(tmp_path):
    from psaq.errors import ArtifactError
    from psaq.stages.common import Weights, load

    store, params = Store(tmp_path), tiny()
    _, _, jobs = run(store, params)
    weights = jobs[0]["model"].result()
    with pytest.raises(ArtifactError, match="changed since this run hashed them"):
        load(params.model, dataclasses.replace(weights, sha256="0" * 64))
    assert isinstance(weights, Weights) and torch.is_tensor(torch.zeros(1))


def test_a_grid_of_more_than_500_points_needs_a_flag():
    from psaq.errors import ConfigError
    from psaq.pipeline import grid_points

    params = tiny(grid={"seeds": list(range(200)), "bits": ["W8A8", "W4A8", "W6A6"]})
    with pytest.raises(ConfigError, match="600 points .* --allow-large-grid"):
        grid_points(params)
    assert len(grid_points(params, allow_large=True)) == 600


def test_an_mlflow_store_that_fails_mid_run_is_one_line():
    from psaq.errors import TrackingError
    from tasks.tracking import _store_errors

    with pytest.raises(TrackingError, match=r"MLflow store sqlite:///x failed while logging p \(OperationalError: no such table: runs\)"):
        with _store_errors("sqlite:///x", "logging p"):
            class OperationalError(Exception):
                pass

            raise OperationalError("no such table: runs\n[SQL: ...]")


def test_reconstruction_runs_between_calibrate_and_evaluate_and_is_reused(tmp_path):
    """The 4-bit recipe end to end: repq sites, then block reconstruction; a rerun reuses it, and
    a reconstruction setting reruns only reconstruct onwards."""
    store = Store(tmp_path)
    params = tiny(quant={"sites": "repq"}, reconstruct={"enabled": True, "iters": 3})
    point = [Point.parse(0, "psaq", 0, "W4A4", "minmax")]
    first, built, jobs = run(store, params, point)
    assert built["reconstruct"] == "built" and built["evaluate"] == "built"
    assert jobs[0]["reconstruct"].result().path != jobs[0]["calibrate"].result().path
    again, reused, _ = run(store, params, point)
    assert set(reused.values()) == {"reused"} and again == first
    more = tiny(quant={"sites": "repq"}, reconstruct={"enabled": True, "iters": 4})
    _, changed, _ = run(store, more, point)
    assert changed == {"model": "reused", "fp32": "reused", "samples": "reused", "calibrate": "reused",
                       "reconstruct": "built", "evaluate": "built", "export": "built"}


def test_psaq_v2_runs_its_loop_in_the_reconstruct_stage_and_is_reused(tmp_path):
    """--calib psaq-v2: a quantized model of its own (its key holds the bits and V2's settings), cached;
    an adaptive setting reruns only what follows it and leaves the other methods' points alone."""
    store = Store(tmp_path)
    adaptive = {"rounds": 1, "sample_steps": 2, "student_steps": 2}
    params = tiny(adaptive=adaptive)
    points = [Point.parse(0, "psaq-v2", 0, "W4A8", "minmax"), Point.parse(0, "psaq", 0, "W4A8", "minmax")]
    first, built, jobs = run(store, params, points[:1])
    assert built["reconstruct"] == "built"
    path = jobs[0]["reconstruct"].result().path
    assert path != jobs[0]["calibrate"].result().path
    from psaq.stages.reconstruct import history
    assert set(history(path)) >= {"adaptive.discrepancy_after_student", "adaptive.entropy"}
    again, reused, _ = run(store, params, points[:1])
    assert set(reused.values()) == {"reused"} and again == first
    _, plain, _ = run(store, params, points[1:])
    assert plain["reconstruct"] == "passed"
    more = tiny(adaptive={**adaptive, "rounds": 2})
    _, changed, _ = run(store, more, points[:1])
    assert changed == {"model": "reused", "fp32": "reused", "samples": "reused", "calibrate": "reused",
                       "reconstruct": "built", "evaluate": "built", "export": "built"}
    _, untouched, _ = run(store, more, points[1:])
    assert untouched["reconstruct"] == "passed" and untouched["evaluate"] == "reused"


def test_a_report_over_a_small_train_folder_shows_what_it_holds(tmp_path):
    """A dataset root whose train/ has fewer than 32 images, and no method that uses real images:
    the report's real row takes the images there are instead of failing after the whole grid."""
    from PIL import Image

    from psaq.datasets.digits import digits_split
    from psaq.stages import report
    from tests.test_data import save_digits_as_pngs

    root = tmp_path / "digits"
    save_digits_as_pngs(root / "val", limit=60)
    images, labels = digits_split("train").tensors
    for label in range(10):  # 2 training images per class: 20 in all
        for i in (labels == label).nonzero()[:2, 0].tolist():
            pixels = ((images[i, 0] * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            (root / "train" / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="L").save(root / "train" / str(label) / f"{i:04d}.png")
    store, params = Store(tmp_path / "project"), tiny(runtime={"dataset": str(root)})
    records, _, jobs = run(store, params)
    art, _ = report.run(store, **report_inputs(params, jobs, records), title="small train")
    summary = json.loads((Path(art.path) / "summary.json").read_text())
    assert set(summary["entropy_per_block"]) == {"real (test images)", "real", "psaq"}


def test_grid_export_names_the_methods_whose_points_are_exported(tmp_path):
    from psaq.errors import ConfigError

    params = tiny(grid={"methods": ["psaq", "gaussian"], "export": ["gaussian"]})
    records, _, jobs = run(Store(tmp_path), params, [Point.parse(0, "psaq", 0, "W8A8", "minmax"),
                                                     Point.parse(0, "gaussian", 0, "W8A8", "minmax")])
    by_method = {r["method"]: r for r in records}
    assert by_method["psaq"]["onnx"] is None and by_method["psaq"]["integer"] is None
    assert Path(by_method["gaussian"]["onnx"]).is_file() and Path(by_method["gaussian"]["integer"]).is_file()
    assert len(list((tmp_path / "models" / "exported").glob("*.onnx"))) == 1
    with pytest.raises(ConfigError, match="unknown calibration mode 'nosuch'"):
        tiny(grid={"export": ["nosuch"]})
    assert tiny(grid={"export": ["psaq-v2"]}).grid.exports("psaq-v2")  # a method the grid may run later


def test_a_folder_changed_while_a_run_reads_it_publishes_nothing(tmp_path, monkeypatch):
    """The key is the fingerprint taken before the images are read: a folder edited meanwhile (and
    restored later) would leave the edited images' result under the restored folder's key."""
    from PIL import Image

    import psaq.data as data_module
    from psaq.errors import DatasetError
    from tests.test_data import save_digits_as_pngs

    folder = save_digits_as_pngs(tmp_path / "digits", limit=60)
    params = tiny(runtime={"device": "cpu", "dataset": str(folder)}, grid={"methods": ["gaussian"]})
    victim = next(folder.rglob("*.png"))
    original = victim.read_bytes()
    read = data_module.FolderDataset.__getitem__

    def edit_while_reading(self, i):
        if i == 5:  # the folder changes under the running evaluation
            Image.new("L", (8, 8), 255).save(victim)
        return read(self, i)

    monkeypatch.setattr(data_module.FolderDataset, "__getitem__", edit_while_reading)
    store = Store(tmp_path / "store")
    with pytest.raises(DatasetError, match="changed while this run read them"):
        run(store, params, [Point.parse(0, "gaussian", 0, "W8A8", "minmax")])
    assert not list((tmp_path / "store" / "metrics").rglob("*.json"))
    victim.write_bytes(original)  # restored: the run computes again from what the folder holds
    monkeypatch.setattr(data_module.FolderDataset, "__getitem__", read)
    records, _, _ = run(store, params, [Point.parse(0, "gaussian", 0, "W8A8", "minmax")])
    assert records[0]["count"] == 60


def test_a_headless_grid_is_scored_by_knn_and_reported_as_such(tmp_path):
    """model.headless through the inline runner: the fp32 and evaluate stages score k-NN over the
    backbone's features (digits' train split as the index), the report names that metric and
    puts no classifier agreement on images, and headless is part of the keys."""
    from psaq.errors import ConfigError
    from psaq.stages import report

    store = Store(tmp_path)
    classifier, _, _ = run(store, tiny(), [Point.parse(0, "gaussian", 0, "W8A8", "minmax")])
    params = tiny(model={"headless": True}, grid={"methods": ["gaussian", "real"]})
    points = [Point.parse(0, m, 0, "W8A8", "minmax") for m in ("gaussian", "real")]
    records, log, jobs = run(store, params, points)
    assert log["model"] == "reused"  # the same trained weights, the head removed after loading
    for rec in records:
        assert 0.9 < rec["feature_cosine"] <= 1.0 and rec["knn_index"] > 0 and "tied" not in rec
        assert rec["metrics"] != classifier[0]["metrics"] and rec["fp32_top1"] != classifier[0]["fp32_top1"]
    art, _ = report.run(store, **report_inputs(params, jobs, records), title="headless")
    text = (Path(art.path) / "benchmark.md").read_text()
    assert "## k-NN top-1 (%), mean ± std over runs" in text and "A headless backbone" in text
    with pytest.raises(ConfigError, match="'psaq' draws a class per image"):
        run(store, params, [Point.parse(0, "psaq", 0, "W8A8", "minmax")])
