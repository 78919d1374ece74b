"""Every registered family passes the same checks: wrapped, it computes the float model's function;
every site set places all its quantizers and calibrates; its export agrees with the simulated
model. A family joins these checks by adding its tiny model to ``tests/tiny.py``."""

import copy

import numpy as np
import pytest
import torch

from psaq.families import FAMILIES, family_of
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.onnx_export import export_onnx, ort_session
from psaq.quant.quantizers import ActQuantizer, WeightQuantizer
from psaq.quant.sites import SITE_SETS, site_counts
from tests.tiny import TINY_MODELS

SETS = sorted(SITE_SETS)
# DeiT is the ViT family's second model: its wrapped forward is checked, its export is ViT's
ONE_PER_FAMILY = [name for name in sorted(TINY_MODELS) if name != "deit"]


def _model(name, dtype=torch.float32):
    torch.manual_seed(0)
    return TINY_MODELS[name]().to(dtype)


def test_every_registered_family_has_a_tiny_model_here():
    assert {family_of(factory()).name for factory in TINY_MODELS.values()} == set(FAMILIES)


@pytest.mark.parametrize("sites", SETS)
@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_the_wrapped_model_computes_the_float_models_function(name, sites):
    model = _model(name, torch.float64)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = model(x)
    q = quantize_(copy.deepcopy(model), QuantConfig(sites=sites))  # every site of the set placed, or refused
    assert sum(site_counts(q).values()) > 0
    for m in q.modules():
        if isinstance(m, WeightQuantizer):
            m.enabled = False
    # uncalibrated activation quantizers pass through: what is left is the wrappers' own arithmetic
    torch.testing.assert_close(q(x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sites", SETS)
@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_every_site_set_calibrates_and_exports_with_the_simulated_outputs(tmp_path, name, sites):
    model = _model(name)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    cfg = QuantConfig(sites=sites)
    q = calibrate(quantize_(copy.deepcopy(model), cfg), x[:8])
    assert all(bool(m.calibrated) for m in q.modules() if isinstance(m, ActQuantizer))
    with torch.no_grad():
        sim = q(x).numpy()
    assert np.isfinite(sim).all()
    out = ort_session(export_onnx(q, cfg, x[:1], tmp_path / f"{name}-{sites}.onnx")).run(None, {"images": x.numpy()})[0]
    # Logits are on an 8-bit grid. An activation on a rounding boundary may round the other way in
    # ONNX Runtime, and in a random-weight model (LayerNorm magnifies its tiny class tokens) the flip
    # can move that image's logits by many levels; wrong scales or sites would move every image's.
    level = (sim.max() - sim.min()) / 255
    assert (np.abs(out - sim) <= 3 * level).mean() >= 0.9
    assert (out.argmax(1) == sim.argmax(1)).mean() >= 15 / 16
