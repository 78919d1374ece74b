"""The weights psaq ships for its own models: loaded by hash, refused when anything does not fit."""

import pytest
import torch

from psaq.errors import CheckpointError, ConfigError
from psaq.models import ModelConfig, load_model
from psaq.models import shipped
from psaq.stages import model as model_stage
from psaq.stages.common import state_sha256
from psaq.store import Store


def test_pretrained_fashion_vit_loads_the_shipped_file_as_trained():
    loaded = load_model(ModelConfig("fashion-vit", pretrained=True))
    entry = shipped.SHIPPED[("fashion-vit", 0)]
    assert loaded.checkpoint == entry.path and loaded.checkpoint_sha256 == entry.sha256
    assert loaded.spec.class_names[0] == "T-shirt/top" and loaded.dataset == "fashion-mnist"
    x = torch.zeros(2, *loaded.spec.input_size)
    assert torch.isfinite(loaded.model(x)).all()


def test_the_model_stage_uses_the_shipped_weights_and_trains_nothing(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("the shipped weights must not be trained again")

    from psaq.models.trainers import Trainer

    monkeypatch.setattr(model_stage.TRAINERS, "get", lambda name: Trainer(no_training))
    weights, built = model_stage.run(Store(tmp_path), ModelConfig("fashion-vit", pretrained=True),
                                     model_stage.TrainConfig())
    assert not built and weights.source == "shipped"
    assert weights.sha256 == state_sha256(load_model(ModelConfig("fashion-vit", pretrained=True)).model)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("config, message", [
    (ModelConfig("fashion-vit", pretrained=True, train_seed=3), "for train seed 0 only"),
    (ModelConfig("fashion-vit", pretrained=True, model_args={"depth": 2}), "model_args"),
    (ModelConfig("digits-vit", pretrained=True), "ships trained weights of 'digits-vit' none"),
    (ModelConfig("fashion-vit"), "pretrained=True for the weights psaq ships"),
])
def test_what_psaq_does_not_ship_is_refused_in_one_line(config, message):
    with pytest.raises(ConfigError, match=message):
        load_model(config)


def test_a_changed_or_missing_shipped_file_is_refused(tmp_path, monkeypatch):
    entry = shipped.SHIPPED[("fashion-vit", 0)]
    copy = tmp_path / entry.file
    copy.write_bytes(entry.path.read_bytes()[:-1] + b"\x00")
    monkeypatch.setattr(shipped, "WEIGHTS", tmp_path)
    with pytest.raises(CheckpointError, match="not the file psaq was measured with"):
        shipped.shipped_weights("fashion-vit", 0)
    copy.unlink()
    with pytest.raises(CheckpointError, match="are missing"):
        shipped.shipped_weights("fashion-vit", 0)


def test_the_shipped_file_records_its_recipe():
    from safetensors import safe_open

    entry = shipped.SHIPPED[("fashion-vit", 0)]
    with safe_open(str(entry.path), framework="pt") as f:
        meta = f.metadata()
    assert float(meta["test_top1"]) == entry.test_top1
    from psaq.models.trainers import FASHION_TRAIN
    import json

    recipe = json.loads(meta["train_config"])
    assert recipe["seed"] == 0 and all(recipe[k] == v for k, v in FASHION_TRAIN["fashion-vit"].items())
