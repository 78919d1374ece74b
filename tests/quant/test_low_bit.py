"""Quantizers beyond the paper: log2 attention probabilities, per-channel activations, and
per-channel post-LayerNorm scales folded into the layers around them — against reference math."""

import copy
import math

import numpy as np
import pytest
import torch

from psaq.errors import ConfigError
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.quantizers import ActQuantizer, Log2Quantizer, WeightQuantizer
from psaq.quant.sites import SITE_SETS, SiteSpec, site_counts
from tests.tiny import tiny_beit, tiny_swin, tiny_vit


def reference_log2(p: np.ndarray, bits: int) -> np.ndarray:
    """FQ-ViT's log2 quantizer in float64: q = round(−log2 p); q ≥ 2^b → 0; else 2^−q."""
    q = np.round(-np.log2(np.maximum(p, 1e-300)))
    out = np.power(2.0, -np.clip(q, 0, 2**bits - 1))
    return np.where(q > 2**bits - 1, 0.0, out)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_log2_quantizer_matches_reference(bits):
    p = torch.softmax(torch.randn(4, 3, 17, 17, dtype=torch.float64) * 3, dim=-1)
    q = Log2Quantizer(bits, site="attn.probs").double()
    q.start_observing()
    q(p)
    q.stop_observing(freeze=True)
    got = q(p).numpy()
    np.testing.assert_allclose(got, reference_log2(p.numpy(), bits), rtol=0, atol=0)
    assert set(np.unique(got)) <= {0.0, *(2.0 ** -k for k in range(2**bits))}


def test_per_channel_activations_match_per_channel_reference():
    x = torch.randn(64, 5, dtype=torch.float64) * torch.tensor([0.1, 1.0, 5.0, 20.0, 2.0], dtype=torch.float64)
    q = ActQuantizer(4, axis=-1, site="mlp.act").double()
    q.start_observing()
    q(x)
    q.stop_observing(freeze=True)
    assert q.scale.shape == (5,)
    lo, hi = x.min(0).values.numpy(), x.max(0).values.numpy()
    s = (hi - lo) / 15
    z = np.clip(-np.round(lo / s), 0, 15)
    want = (np.clip(np.round(x.numpy() / s + z), 0, 15) - z) * s
    np.testing.assert_allclose(q(x).numpy(), want, atol=1e-12)


def with_set(monkeypatch, name, **updates):
    sets = dict(SITE_SETS._items)
    official = sets["official"]
    sets[name] = lambda family: tuple(SiteSpec(s.site, granularity=updates.get(s.site, s.granularity))
                                      for s in official(family))
    monkeypatch.setattr(SITE_SETS, "_items", sets)


@pytest.mark.parametrize("factory", [tiny_vit, tiny_swin])
def test_folding_keeps_the_float_model_and_the_per_channel_integers(factory, monkeypatch):
    torch.manual_seed(0)
    model = factory().double()
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    y = model(x)
    with_set(monkeypatch, "channel", **{"block.norm1": "channel", "block.norm2": "channel"})
    with_set(monkeypatch, "folded", **{"block.norm1": "folded-channel", "block.norm2": "folded-channel"})
    per_channel = calibrate(quantize_(copy.deepcopy(model), QuantConfig(sites="channel")), x)
    folded = calibrate(quantize_(copy.deepcopy(model), QuantConfig(sites="folded")), x)
    norm_q = [m for m in folded.modules() if isinstance(m, ActQuantizer) and m.site.startswith("block.norm")]
    assert norm_q and all(m.scale.numel() == 1 for m in norm_q)  # inference is per tensor
    # with weights and the other activations left float, the folded model computes the same
    # function as the per-channel one (the integers are the same), and the float model too
    for m in (per_channel, folded):
        for mod in m.modules():
            if isinstance(mod, WeightQuantizer):
                mod.enabled = False
            if isinstance(mod, ActQuantizer) and not mod.site.startswith("block.norm"):
                mod.calibrated.fill_(False)
    torch.testing.assert_close(folded(x), per_channel(x), rtol=1e-9, atol=1e-9)
    for mod in folded.modules():
        if isinstance(mod, ActQuantizer):
            mod.calibrated.fill_(False)
    torch.testing.assert_close(folded(x), y, rtol=1e-9, atol=1e-9)


def test_repq_set_quantizes_the_probabilities_and_folds_the_norms():
    torch.manual_seed(0)
    model = quantize_(tiny_vit(), QuantConfig(sites="repq", w_bits=4, a_bits=4))
    assert site_counts(model)["attn.probs"] == 2
    calibrate(model, torch.randn(8, 3, 32, 32))
    probs = [m for m in model.modules() if isinstance(m, Log2Quantizer)]
    assert probs and all(bool(m.calibrated) for m in probs)
    assert all(m.scale.numel() == 1 for m in model.modules() if isinstance(m, ActQuantizer))


def test_bad_specs_are_refused():
    with pytest.raises(ConfigError, match="only block.norm1, block.norm2 can fold"):
        SiteSpec("mlp.act", granularity="folded-channel")
    with pytest.raises(ConfigError, match="log2 quantizer has no per-channel form"):
        SiteSpec("attn.probs", kind="log2", granularity="channel")
    with pytest.raises(ConfigError, match="unknown quantizer kind 'log3'"):
        SiteSpec("attn.probs", kind="log3")


def test_a_folded_model_saves_and_loads(tmp_path):
    from psaq.quant.serialize import load_quantized, save_quantized

    torch.manual_seed(0)
    base = tiny_vit()
    x = torch.randn(8, 3, 32, 32)
    cfg = QuantConfig(sites="repq", w_bits=4, a_bits=6)
    q = calibrate(quantize_(copy.deepcopy(base), cfg), x)
    path = save_quantized(q, cfg, tmp_path / "q.safetensors")
    again = load_quantized(copy.deepcopy(base), path)
    torch.testing.assert_close(again(x), q(x))
    assert math.isfinite(float(q(x).detach().abs().max()))


@pytest.mark.parametrize("factory", [tiny_vit, tiny_beit])
def test_folding_into_a_linear_without_a_bias_keeps_the_shift(factory):
    """The folded LayerNorm shifts its output by s·r₂; a qkv with no bias of its own (BEiT's, a ViT
    built without one) gets a zero bias to take −W·(s·r₂), or the shift would be silently dropped."""
    torch.manual_seed(0)
    model = factory(qkv_bias=False).double() if factory is tiny_vit else factory().double()
    assert all(m.attn.qkv.bias is None for m in model.blocks)
    x = torch.randn(8, 3, 32, 32, dtype=torch.float64)
    y = model(x)
    folded = calibrate(quantize_(copy.deepcopy(model), QuantConfig(sites="repq")), x)
    for mod in folded.modules():
        if isinstance(mod, WeightQuantizer):
            mod.enabled = False
        if isinstance(mod, ActQuantizer):
            mod.calibrated.fill_(False)
    torch.testing.assert_close(folded(x), y, rtol=1e-9, atol=1e-9)
