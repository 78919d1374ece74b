import pytest

from psaq.errors import ConfigError, UnknownNameError
from psaq.models import MODELS, ModelConfig, load_model, parse_model_args
from psaq.models.digits import DIGITS_VIT_ARGS, digits_vit


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownNameError, match="did you mean deit_small_patch16_224"):
        load_model(ModelConfig("deit_smal_patch16_224"))
    with pytest.raises(UnknownNameError, match="digits-vit"):
        load_model(ModelConfig("digit-vit"))


@pytest.mark.parametrize("name,args", [
    ("deit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=1)),
    ("swin_tiny_patch4_window7_224", dict(img_size=32, window_size=4, depths=(1, 1), num_heads=(1, 2), embed_dim=16)),
])
def test_timm_models_by_name_with_overrides(name, args):
    loaded = load_model(ModelConfig(name, model_args=args, random_weights=True))
    assert loaded.spec.input_size == (3, 32, 32)
    assert loaded.spec.mean and loaded.spec.num_classes == 1000


def test_bad_timm_arguments_are_a_config_error():
    with pytest.raises(ConfigError, match="rejected its arguments"):
        load_model(ModelConfig("deit_tiny_patch16_224", model_args={"no_such_arg": 1}, random_weights=True))
    with pytest.raises(ConfigError, match="could not build 'vit_tiny_patch16_224'"):
        load_model(ModelConfig("vit_tiny_patch16_224", model_args={"img_size": 0}, random_weights=True))


def test_a_timm_model_without_weights_is_refused_with_the_ways_out():
    with pytest.raises(ConfigError, match="has no weights: pass --checkpoint FILE .* --random-weights"):
        load_model(ModelConfig("vit_tiny_patch16_224", model_args={"img_size": 32, "patch_size": 8, "depth": 1}))
    with pytest.raises(ConfigError, match="contradicts"):
        ModelConfig("vit_tiny_patch16_224", pretrained=True, random_weights=True)


def test_digits_vit_is_registered_with_16_tokens():
    assert "digits-vit" in MODELS
    model = digits_vit()
    assert model.patch_embed.num_patches == 16 and DIGITS_VIT_ARGS["embed_dim"] == 96


def test_parse_model_args():
    assert parse_model_args(["img_size=64", "drop_rate=0.1", "global_pool=avg", "depths=(2, 2)"]) == {
        "img_size": 64, "drop_rate": 0.1, "global_pool": "avg", "depths": (2, 2)}
    with pytest.raises(ConfigError, match="key=value"):
        parse_model_args(["img_size"])
    # as params.yaml reads model_args: false is False, not the truthy text "false"
    assert parse_model_args(["qkv_bias=false", "class_token=True", "fc_norm=null", "depths=[2, 2]", "name=a: b"]) == {
        "qkv_bias": False, "class_token": True, "fc_norm": None, "depths": [2, 2], "name": "a: b"}
