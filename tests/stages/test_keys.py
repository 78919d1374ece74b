"""Cache keys follow the code a point runs: its stages' own code, and its own model's family and
dataset files. Measured on a copy of the package: a docstring edit re-keys no stage, an edit to
the Swin family re-keys only Swin points, and a new family re-keys nothing."""

import shutil
from pathlib import Path

import pytest

from psaq import codehash
from psaq.models import ModelConfig
from psaq.stages.common import Weights, identity
from psaq.stages.graph import GRAPH

REPO = Path(__file__).resolve().parents[2]
POINTS = {"vit": (ModelConfig("fashion-vit"), Weights("shipped", "0" * 64, family="vit")),
          "swin": (ModelConfig("fashion-swin"), Weights("trained", "1" * 64, family="swin")),
          "deit": (ModelConfig("deit_tiny_patch16_224"), Weights("random", "2" * 64, family="vit"))}


@pytest.fixture
def copy_of_psaq(tmp_path, monkeypatch):
    shutil.copytree(REPO / "psaq", tmp_path / "psaq", ignore=shutil.ignore_patterns("__pycache__", "weights"))
    monkeypatch.setattr(codehash, "ROOT", tmp_path)
    codehash.closure.cache_clear()
    codehash.code_hash.cache_clear()
    yield tmp_path / "psaq"
    codehash.closure.cache_clear()
    codehash.code_hash.cache_clear()


def keys() -> dict:
    codehash.closure.cache_clear()
    codehash.code_hash.cache_clear()
    return {"stages": {name: stage.code for name, stage in GRAPH.items()},
            "points": {name: identity(*point) for name, point in POINTS.items()}}


def test_no_stage_is_keyed_by_a_plug_in_file():
    for stage in GRAPH.values():
        assert not set(stage.code_files()) & set(codehash.plugin_files()), stage.name


def test_a_docstring_edit_re_keys_nothing_and_a_code_edit_does(copy_of_psaq):
    before = keys()
    for path in (copy_of_psaq / "stages" / "calibrate.py", copy_of_psaq / "families" / "swin.py",
                 copy_of_psaq / "quant" / "onnx_graph.py"):
        text = path.read_text()
        start = text.index('"""') + 3
        path.write_text(text[:start] + "Reworded: " + text[start:] + "\n# a comment\n")
    assert keys() == before
    path = copy_of_psaq / "stages" / "calibrate.py"
    path.write_text(path.read_text() + "\nEDITED = True\n")
    after = keys()
    assert after["stages"]["calibrate"] != before["stages"]["calibrate"]
    assert {k: v for k, v in after["stages"].items() if k != "calibrate"} == \
        {k: v for k, v in before["stages"].items() if k != "calibrate"}


def test_an_edit_to_the_swin_family_re_keys_swin_points_only(copy_of_psaq):
    before = keys()
    path = copy_of_psaq / "families" / "swin.py"
    path.write_text(path.read_text().replace("synthesis_lr=0.25", "synthesis_lr=0.26"))
    after = keys()
    assert after["stages"] == before["stages"]
    assert after["points"]["swin"] != before["points"]["swin"]
    assert after["points"]["vit"] == before["points"]["vit"] and after["points"]["deit"] == before["points"]["deit"]


def test_an_edit_to_a_dataset_re_keys_the_models_trained_on_it_only(copy_of_psaq):
    before = keys()
    path = copy_of_psaq / "datasets" / "digits.py"
    path.write_text(path.read_text() + "\nEDITED = True\n")
    assert keys() == before  # no point here is a digits model
    path = copy_of_psaq / "datasets" / "fashion_mnist.py"
    path.write_text(path.read_text() + "\nEDITED = True\n")
    after = keys()
    assert after["stages"] == before["stages"] and after["points"]["deit"] == before["points"]["deit"]
    assert after["points"]["vit"] != before["points"]["vit"] and after["points"]["swin"] != before["points"]["swin"]


def test_a_new_family_re_keys_nothing(copy_of_psaq):
    before = keys()
    families = copy_of_psaq / "families"
    (families / "newfamily.py").write_text("VALUE = 1\n")
    builtin = families / "builtin.py"
    builtin.write_text(builtin.read_text() + "from psaq.families import newfamily  # noqa: F401\n")
    assert keys() == before
