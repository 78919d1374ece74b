"""Quantizer kinds declare what they can do; reconstruction, V2 and the export ask them."""

import pytest
import torch

from psaq.errors import ConfigError
from psaq.quant.onnx_export import qdq_mode, require_onnx_path
from psaq.quant.quantizers import QUANTIZER_KINDS, ActQuantizer


def test_the_built_in_kinds_declare_their_scale_and_export():
    uniform, log2 = QUANTIZER_KINDS["uniform"](8), QUANTIZER_KINDS["log2"](4)
    assert (uniform.learnable_scale, uniform.onnx_export) == (True, "qdq")
    assert (log2.learnable_scale, log2.onnx_export) == (False, "float-ops")
    assert uniform.granularity == "per tensor" and ActQuantizer(8, axis=-1).granularity == "per channel"


class Cubic(ActQuantizer):
    """A toy kind with a forward of its own and nothing declared."""

    def forward(self, x):
        return x ** 3


class DeclaredCubic(Cubic):
    learnable_scale = False
    onnx_export = "float-ops"


def test_a_kind_with_its_own_forward_must_say_how_it_exports():
    model = torch.nn.Sequential(Cubic(8))
    with pytest.raises(ConfigError, match="quantizer kind Cubic has a forward of its own but declares no onnx_export"):
        with qdq_mode(model):
            pass
    require_onnx_path([DeclaredCubic(8), ActQuantizer(8)])  # declared, or the uniform kind itself: fine


def test_reconstruction_learns_the_scales_of_kinds_that_have_one(monkeypatch):
    """The learnable scales are chosen by the declaration, not the class: a kind that says it has
    none is left out, whatever it inherits from."""
    from psaq.quant import reconstruct

    block = torch.nn.Sequential(ActQuantizer(8), DeclaredCubic(8))
    for q in block:
        q.calibrated.fill_(True)
    seen = {}

    def learning(dropped, scales, **kw):
        seen["scales"], seen["dropped"] = scales, dropped
        raise StopIteration

    monkeypatch.setattr(reconstruct, "learning", learning)
    with pytest.raises(StopIteration):
        reconstruct._tune_block(block, torch.zeros(1), torch.zeros(1), reconstruct.ReconstructConfig(), None)
    assert seen["scales"] == [block[0]] and seen["dropped"] == [block[0], block[1]]
