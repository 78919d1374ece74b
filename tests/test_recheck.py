"""A grid evaluated again under today's code and libraries, against what the store holds."""

import psaq.evaluation
from psaq.pipeline import Point
from psaq.recheck import environment, recheck, summary_line
from psaq.store import Store
from tests.test_pipeline import run, tiny


def test_a_recheck_reproduces_stored_evaluations_and_names_a_drift_the_keys_cannot_see(tmp_path, monkeypatch):
    store, params = Store(tmp_path), tiny()
    points = [Point.parse(0, "psaq", 0, "W8A8", "minmax")]
    [stored], _, _ = run(store, params, points)
    result = recheck(params, points, store, progress=False)
    assert result["differ"] == 0 and result["points"][0]["top1_now"] == stored["top1"]
    assert summary_line(result).endswith("every one reproduced image by image")
    assert {"torch", "timm", "onnxruntime"} <= set(result["environment"])

    # a library that now ranks classes otherwise: same code, same keys, other predictions
    ranked = psaq.evaluation.ranked
    monkeypatch.setattr(psaq.evaluation, "ranked", lambda logits, k=1: ranked(-logits, k))
    drifted = recheck(params, points, store, progress=False)
    assert drifted["differ"] == 1 and drifted["points"][0]["top1_now"] != stored["top1"]
    assert "1 differ from the stored results" in summary_line(drifted)
    # the store still holds the stored result: a recheck computes aside, never over it
    monkeypatch.setattr(psaq.evaluation, "ranked", ranked)
    [again], log, _ = run(store, params, points)
    assert again["top1"] == stored["top1"] and log["evaluate"] == "reused"


def test_the_environment_names_the_libraries_that_compute_the_figures():
    env = environment()
    assert env["torch"].startswith("2.") and env["python"].count(".") == 2
