"""``model.headless``: a classifier's weights loaded as a backbone (the head removed after
loading), for timm models with a checkpoint and for psaq's shipped ones; its identity in keys."""

import pytest
import torch

from psaq.models import ModelConfig, load_model, save_checkpoint
from psaq.stages.common import Weights, identity
from tests.tiny import tiny_swin, tiny_vit

ARCH = {"vit": ("vit_tiny_patch16_224", tiny_vit, dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
                                                        num_classes=10)),
        "swin": ("swin_tiny_patch4_window7_224", tiny_swin, dict(img_size=32, patch_size=2, window_size=4, embed_dim=24,
                                                                 depths=(2, 2), num_heads=(2, 4), num_classes=10))}


@pytest.mark.parametrize("family", sorted(ARCH))
def test_a_checkpoint_with_a_head_loads_as_its_backbone(family, tmp_path):
    name, build, args = ARCH[family]
    torch.manual_seed(0)
    classifier = build()
    path = save_checkpoint(classifier, tmp_path / "m.safetensors")
    loaded = load_model(ModelConfig(name, checkpoint=str(path), model_args=args, headless=True))
    assert loaded.model.num_classes == 0 and loaded.spec.num_classes == 0 and loaded.spec.headless
    assert not any(k.startswith("head.fc") or k == "head.weight" for k in loaded.model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = classifier.forward_head(classifier.forward_features(x), pre_logits=True)
        torch.testing.assert_close(loaded.model(x), expected, rtol=0, atol=0)
    full = load_model(ModelConfig(name, checkpoint=str(path), model_args=args))
    assert full.spec.num_classes == 10 and not full.spec.headless


def test_psaqs_shipped_classifier_loads_headless():
    loaded = load_model(ModelConfig("fashion-vit", pretrained=True, headless=True))
    assert loaded.spec.headless and loaded.model(torch.zeros(1, *loaded.spec.input_size)).shape == (1, 96)


def test_a_headless_model_is_keyed_apart_from_its_classifier():
    weights = Weights("checkpoint", "0" * 64, family="vit")
    model = ModelConfig("vit_tiny_patch16_224")
    assert identity(model, weights) != identity(model, Weights("checkpoint", "0" * 64, family="vit", headless=True))


def test_headless_must_be_a_boolean():
    from psaq.errors import ConfigError

    with pytest.raises(ConfigError, match="headless must be true or false"):
        ModelConfig("fashion-vit", headless="yes")
