"""The default site set is the official code's: where its quantizers sit, how many, and the
forward they give, against ``models/vit_quant.py`` written out here on a timm ViT's weights."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from psaq.errors import ConfigError, UnknownNameError
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.quantizers import ActQuantizer
from psaq.quant.sites import SITE_SETS, SiteSpec, site_counts
from tests.tiny import tiny_deit, tiny_swin, tiny_vit

BLOCK = ("block.norm1", "attn.qkv", "attn.scores", "attn.context", "attn.proj", "block.residual1",
         "block.norm2", "mlp.act", "mlp.fc2", "block.residual2")


def test_official_vit_has_10_quantizers_per_block_and_7_outside():
    model = quantize_(tiny_vit(depth=3), QuantConfig())
    counts = site_counts(model)
    assert all(counts[s] == 3 for s in BLOCK)
    outside = Counter({s: n for s, n in counts.items() if s not in BLOCK})
    assert outside == Counter({s: 1 for s in ("input", "patch_embed", "prefix_concat", "pos_embed", "pos_sum",
                                              "head_input", "logits")})
    assert sum(counts.values()) == 3 * 10 + 7


def test_official_swin_adds_the_bias_table_biased_scores_and_merging():
    model = quantize_(tiny_swin(), QuantConfig())  # 2 stages × 2 blocks, one patch merging
    counts = site_counts(model)
    assert all(counts[s] == 4 for s in (*BLOCK, "attn.rel_pos_table", "attn.biased_scores"))
    assert counts["merge.norm"] == counts["merge.reduction"] == 1
    assert {s: counts[s] for s in ("input", "patch_embed.proj", "patch_embed", "final_norm", "head_input", "logits")} \
        == dict.fromkeys(("input", "patch_embed.proj", "patch_embed", "final_norm", "head_input", "logits"), 1)
    assert sum(counts.values()) == 4 * 12 + 2 + 6


def test_compact_set_is_psaqs_earlier_one():
    vit = site_counts(quantize_(tiny_vit(), QuantConfig(sites="compact")))
    # every linear's input (4 per block + head), qkv out, q·kᵀ, 2 residuals per block; image input, pos sum
    assert vit == Counter({"linear.input": 9, "attn.qkv": 2, "attn.scores": 2, "block.residual1": 2,
                           "block.residual2": 2, "input": 1, "pos_sum": 1})


def test_unknown_sets_and_sites_are_refused():
    with pytest.raises(UnknownNameError, match="did you mean official"):
        QuantConfig(sites="oficial")
    with pytest.raises(ConfigError, match="unknown quantizer site 'attn.softmax'"):
        SiteSpec("attn.softmax")
    with pytest.raises(ConfigError, match="2 to 8"):
        SiteSpec("logits", bits=9)


def test_a_site_with_no_place_in_the_model_is_refused(monkeypatch):
    sets = dict(SITE_SETS._items)
    sets["broken"] = lambda family: (SiteSpec("merge.norm"),) if family.name == "vit" else ()
    monkeypatch.setattr(SITE_SETS, "_items", sets)
    with pytest.raises(ConfigError, match="merge.norm of set 'broken' found no place"):
        quantize_(tiny_vit(), QuantConfig(sites="broken"))


def test_swin_mask_never_sets_a_range():
    torch.manual_seed(0)
    model = tiny_swin()
    images = torch.randn(4, 3, 32, 32)
    calibrate(quantize_(model, QuantConfig()), images)
    biased = [m for m in model.modules() if isinstance(m, ActQuantizer) and m.site == "attn.biased_scores"]
    lows = [float(-m.zero_point * m.scale) for m in biased]
    assert min(lows) > -10  # the shifted-window mask adds −100 after this site


def test_ranges_are_taken_on_the_float_model():
    torch.manual_seed(0)
    model, images = tiny_vit(), torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        logits = model(images)
    want = ((logits.max() - logits.min()) / 255).item()
    official = calibrate(quantize_(copy.deepcopy(model), QuantConfig()), images)
    option = calibrate(quantize_(copy.deepcopy(model), QuantConfig(calibrate_with_quantized_weights=True)), images)
    scale = {name: next(m.scale.item() for m in q.modules() if isinstance(m, ActQuantizer) and m.site == "logits")
             for name, q in (("official", official), ("option", option))}
    assert scale["official"] == pytest.approx(want, rel=1e-6)
    assert scale["option"] != pytest.approx(want, rel=1e-6)


# --- vit_quant.py's forward, written out -----------------------------------------------------


class OfficialQuantViT:
    """QuantAct/QuantLinear/QuantConv2d of the official code at the positions of vit_quant.py."""

    def __init__(self, model, w_bits: int, a_bits: int):
        self.m, self.w_bits, self.a_bits = model, w_bits, a_bits
        self.ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.quant = False

    def act(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if not self.quant:
            lo, hi = x.min(), x.max()
            if name in self.ranges:
                lo, hi = torch.minimum(lo, self.ranges[name][0]), torch.maximum(hi, self.ranges[name][1])
            self.ranges[name] = (lo, hi)
            return x
        x_min, x_max = self.ranges[name]
        qmin, qmax = 0, 2**self.a_bits - 1
        scale = ((x_max - x_min) / float(qmax - qmin)).clamp(torch.finfo(torch.float32).eps)
        zero_point = (qmin - torch.round(x_min / scale)).clamp(qmin, qmax)
        return ((x / scale + zero_point).round().clamp(qmin, qmax) - zero_point) * scale

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        if not self.quant:
            return w
        v = w.reshape(w.shape[0], -1)
        v_max, v_min = v.max(axis=1).values, v.min(axis=1).values
        qmax, qmin = 2 ** (self.w_bits - 1) - 1, -(2 ** (self.w_bits - 1))
        scale = (torch.max(-v_min, v_max) / (float(qmax - qmin) / 2)).clamp(torch.finfo(torch.float32).eps)
        scale = scale.reshape(-1, *([1] * (w.dim() - 1)))
        return (w / scale).round().clamp(qmin, qmax) * scale

    def linear(self, layer, x):
        return F.linear(x, self.weight(layer.weight), layer.bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m, act = self.m, self.act
        B = x.shape[0]
        x = act("qact_input", x)
        pe = m.patch_embed.proj
        x = F.conv2d(x, self.weight(pe.weight), pe.bias, pe.stride).flatten(2).transpose(1, 2)
        x = act("patch_embed.QuantAct", x)
        x = torch.cat((m.cls_token.expand(B, -1, -1), x), dim=1)
        x = act("qact_embed", x)
        x = x + act("qact_pos", m.pos_embed)
        x = act("qact1", x)
        for i, blk in enumerate(m.blocks):
            a, heads = blk.attn, blk.attn.num_heads
            N, C = x.shape[1], x.shape[2]
            h = act(f"{i}.qact1", blk.norm1(x))
            qkv = act(f"{i}.attn.qact1", self.linear(a.qkv, h))
            q, k, v = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
            attn = act(f"{i}.attn.qact_attn1", (q @ k.transpose(-2, -1)) * a.scale).softmax(dim=-1)
            ctx = act(f"{i}.attn.qact2", (attn @ v).transpose(1, 2).reshape(B, N, C))
            x = act(f"{i}.qact2", x + act(f"{i}.attn.qact3", self.linear(a.proj, ctx)))
            h = act(f"{i}.qact3", blk.norm2(x))
            h = act(f"{i}.mlp.QuantAct1", F.gelu(self.linear(blk.mlp.fc1, h)))
            x = act(f"{i}.qact4", x + act(f"{i}.mlp.QuantAct2", self.linear(blk.mlp.fc2, h)))
        x = act("qact2", m.norm(x)[:, 0])
        return act("act_out", self.linear(m.head, x))


@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (4, 8), (4, 4)])
def test_quantized_vit_equals_the_official_quantized_forward(w_bits, a_bits):
    torch.manual_seed(0)
    model = tiny_vit(depth=3).double()
    calib = torch.randn(16, 3, 32, 32, dtype=torch.float64)
    test = torch.randn(16, 3, 32, 32, dtype=torch.float64)
    official = OfficialQuantViT(model, w_bits, a_bits)
    with torch.no_grad():
        official(calib)
        official.quant = True
        want = official(test)
        got = calibrate(quantize_(copy.deepcopy(model), QuantConfig(w_bits=w_bits, a_bits=a_bits)), calib)(test)
    assert len(official.ranges) == 3 * 10 + 7
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_distilled_deit_gets_both_heads_quantized():
    counts = site_counts(quantize_(tiny_deit(), QuantConfig()))
    assert counts["logits"] == counts["head_input"] == 2
