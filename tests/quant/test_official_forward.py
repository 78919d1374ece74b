"""The quantized forward against the official code's own outputs.

``official_forward.safetensors`` holds, for a small timm ViT and a small timm Swin, the weights,
a calibration batch, a test batch, and the logits of the official ``models/vit_quant.py`` and
``models/swin_quant.py`` (float, and W8A8, W4A8, W4A4 after one float forward of the calibration
batch, ``model_quant()`` and ``model_freeze()``), all in float64. psaq's default quantizer,
calibrated the same way in float64, must give the same logits: any quantizer moved, added or
dropped (Swin's residual sums, the bias table, patch merging) changes them.
"""

from __future__ import annotations

import pytest
import timm
import torch

import psaq.families.builtin  # noqa: F401 - the tests quantize these families
from psaq.quant import QuantConfig, calibrate, quantize_
from tests.reference import load_reference

SETTINGS = ("float", "W8A8", "W4A8", "W4A4")
# float64 end to end: the official values and psaq's differ only by the order of float64 sums
TOLERANCE = dict(rtol=1e-9, atol=1e-9)


def official_model(f, cases: dict, case: str) -> torch.nn.Module:
    info = cases[case]
    model = timm.create_model(info["timm_model"], **info["model_args"]).double().eval()
    prefix = f"{case}.weights."
    weights = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    # the file holds every parameter; buffers timm derives at build time are not saved
    params = {name for name, _ in model.named_parameters()}
    assert params == set(weights), sorted(params ^ set(weights))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k not in params for k in missing)
    return model


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("case", ["vit", "swin"])
def test_logits_equal_the_official_models(case, setting):
    f, cases = load_reference("official_forward")
    model = official_model(f, cases, case)
    calib, test = f.get_tensor("calib"), f.get_tensor("test")
    want = f.get_tensor(f"{case}.{setting}.logits")
    with torch.no_grad():
        if setting == "float":
            got = model(test)
        else:
            w_bits, a_bits = (int(b) for b in setting[1:].split("A"))
            got = calibrate(quantize_(model, QuantConfig(w_bits=w_bits, a_bits=a_bits)), calib)(test)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, **TOLERANCE)


def test_the_reference_separates_the_settings():
    """The quantized logits differ from the float ones by far more than the tolerance: equality
    above is a statement about quantization, not about the float model."""
    f, _ = load_reference("official_forward")
    for case in ("vit", "swin"):
        ref = f.get_tensor(f"{case}.float.logits")
        for setting in SETTINGS[1:]:
            assert (f.get_tensor(f"{case}.{setting}.logits") - ref).abs().max() > 1e-4
