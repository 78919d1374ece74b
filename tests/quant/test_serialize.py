import pytest
import torch

from psaq.errors import CheckpointError, NotCalibratedError
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.serialize import load_quantized, save_quantized
from tests.tiny import tiny_vit


def test_quantized_model_round_trips(tmp_path, images):
    torch.manual_seed(0)
    model = tiny_vit()
    fresh = tiny_vit()
    fresh.load_state_dict(model.state_dict())
    cfg = QuantConfig(w_bits=4, a_bits=6)
    calibrate(quantize_(model, cfg), images)
    path = save_quantized(model, cfg, tmp_path / "q.safetensors")
    back = load_quantized(fresh, path)
    torch.testing.assert_close(back(images), model(images), rtol=0, atol=0)


def test_uncalibrated_and_plain_checkpoints_are_refused(tmp_path):
    model = quantize_(tiny_vit(), QuantConfig())
    with pytest.raises(NotCalibratedError):
        save_quantized(model, QuantConfig(), tmp_path / "q.safetensors")
    from psaq.models import save_checkpoint

    plain = save_checkpoint(tiny_vit(), tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not a psaq quantized model"):
        load_quantized(tiny_vit(), plain)
