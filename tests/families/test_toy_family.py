"""A new family is one file and one line (CONTRIBUTING.md). This module is that file for a toy
model built from timm layers: it declares a site of its own, registers, and is quantized with
every site set, calibrated and hooked for synthesis with nothing else touched. BEiT, the third
built-in family, is held to the same count: no psaq file but its own and ``builtin.py`` names it."""

import ast
import copy
import re
from pathlib import Path

import pytest
import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Attention, Block
from torch import nn

from psaq.errors import ConfigError
from psaq.families import FAMILIES, Family, family_of, register
from psaq.families.common import BLOCK_OFFICIAL, COMMON_ROLES, FOLD_PATHS
from psaq.families.vit import QuantViTAttention, QuantViTBlock
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.sites import SITE_SETS, SiteSpec, site_counts
from psaq.synth.hooks import AttentionOutputHooks

REPO = Path(__file__).resolve().parents[2]


class ToyNet(nn.Module):
    """Patch embedding, two ViT blocks, a norm over the mean-pooled tokens, a linear head."""

    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed(img_size=32, patch_size=8, in_chans=3, embed_dim=48)
        self.blocks = nn.Sequential(Block(48, 3, qkv_bias=True), Block(48, 3, qkv_bias=True))
        self.norm = nn.LayerNorm(48)
        self.head = nn.Linear(48, 10)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.patch_embed(x)).mean(1)))


def toy_family() -> Family:
    return Family(
        name="toy",
        model_types=(ToyNet,),
        attention_types=(Attention,),
        block_types=(Block,),
        wrappers={Attention: QuantViTAttention, Block: QuantViTBlock},
        roles={**COMMON_ROLES,
               (ToyNet, "patch_embed"): ((), ("patch_embed",)),
               (Attention, "proj"): (("attn.context",), ("attn.proj",)),
               (ToyNet, "norm"): ((), ("toy.pooled_norm",)),
               (ToyNet, "head"): (("head_input",), ("logits",))},
        official_sites=("input", "patch_embed", *BLOCK_OFFICIAL, "toy.pooled_norm", "head_input", "logits"),
        compact_sites=("input", "linear.input", "attn.qkv", "attn.scores"),
        synthesis_lr=0.2,
        site_names={"toy.pooled_norm": "the LayerNorm over the mean-pooled tokens"},
        fold_paths=FOLD_PATHS,
    )


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(FAMILIES, "_items", dict(FAMILIES._items))  # unregistered again after the test
    with pytest.raises(ConfigError, match="unknown quantizer site 'toy.pooled_norm'"):
        SiteSpec("toy.pooled_norm")  # a family's own site is known once the family is
    register(toy_family())
    torch.manual_seed(0)
    return ToyNet().eval()


def test_the_toy_family_quantizes_with_every_set_and_hooks_for_synthesis(toy):
    assert family_of(toy).name == "toy"
    x = torch.randn(8, 3, 32, 32)
    for sites in SITE_SETS:
        q = calibrate(quantize_(copy.deepcopy(toy), QuantConfig(sites=sites)), x)  # every site placed, or refused
        assert torch.isfinite(q(x)).all(), sites
    assert site_counts(quantize_(copy.deepcopy(toy), QuantConfig()))["toy.pooled_norm"] == 1
    with AttentionOutputHooks(toy) as hooks:
        toy(x)
        assert len(hooks.take()) == 2


def test_a_family_using_a_site_it_does_not_declare_is_refused(monkeypatch):
    monkeypatch.setattr(FAMILIES, "_items", dict(FAMILIES._items))
    family = toy_family()
    with pytest.raises(ValueError, match="uses site\\(s\\) toy.pooled_norm that are neither core sites nor in its"):
        register(Family(**{**family.__dict__, "site_names": {}}))
    assert "toy" not in FAMILIES


def _code(path: Path) -> str:
    """A file's code without its docstrings and comments (prose may name a family; code may not)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def test_beit_lives_in_its_own_file_and_one_line_of_builtin():
    named = [p.relative_to(REPO).as_posix() for p in (REPO / "psaq").rglob("*.py")
             if re.search(r"beit", _code(p), re.IGNORECASE)]
    assert sorted(named) == ["psaq/families/beit.py", "psaq/families/builtin.py"]
    builtin = _code(REPO / "psaq" / "families" / "builtin.py")
    assert len([line for line in builtin.splitlines() if re.search("beit", line, re.IGNORECASE)]) == 1


def test_a_family_registered_outside_psaq_is_keyed_by_its_own_file(toy):
    from psaq.codehash import source_hash
    from psaq.models import ModelConfig
    from psaq.stages.common import Weights, identity

    key = identity(ModelConfig("toy"), Weights("random", "0" * 64, family="toy"))
    assert key["family"] == source_hash(__file__)  # an edit to this file re-keys the toy family's results
