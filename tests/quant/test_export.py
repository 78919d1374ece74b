import pytest
import torch

import psaq.families.builtin  # noqa: F401 - the tests quantize these families
from psaq.errors import CheckpointError, NotCalibratedError
from psaq.models.digits import digits_vit
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.integer_weights import load_integer_model, pack_int4, save_integer_model, unpack_int4


def test_int4_packing_round_trips_every_value():
    q = torch.arange(-8, 8, dtype=torch.int8).repeat(3)[:-1].reshape(47)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.numel() == 24
    assert torch.equal(unpack_int4(packed, (47,)), q)


@pytest.mark.parametrize("w_bits,max_ratio", [(8, 0.30), (4, 0.18)])
def test_integer_file_rebuilds_the_simulated_model(tmp_path, w_bits, max_ratio):
    torch.manual_seed(0)
    model = digits_vit(depth=2)
    x = torch.randn(8, 3, 32, 32)
    cfg = QuantConfig(w_bits=w_bits, a_bits=8)
    calibrate(quantize_(model, cfg), x)
    path = save_integer_model(model, cfg, {"name": "digits-vit", "model_args": {"depth": 2}}, tmp_path / "int.safetensors")
    rebuilt = load_integer_model(path)
    torch.testing.assert_close(rebuilt(x), model(x), rtol=0, atol=0)
    from psaq.models import save_checkpoint

    fp32 = save_checkpoint(digits_vit(depth=2), tmp_path / "fp32.safetensors")
    assert path.stat().st_size < max_ratio * fp32.stat().st_size


def test_uncalibrated_and_foreign_files_are_refused(tmp_path):
    model = quantize_(digits_vit(depth=1), QuantConfig())
    with pytest.raises(NotCalibratedError):
        save_integer_model(model, QuantConfig(), {"name": "digits-vit"}, tmp_path / "x.safetensors")
    from psaq.models import save_checkpoint

    plain = save_checkpoint(digits_vit(depth=1), tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not a psaq integer model"):
        load_integer_model(plain)
