"""The official estimator's one-node path (``_OfficialEntropy``) against autograd through its parts."""

from __future__ import annotations

import pytest
import torch

from psaq.synth.entropy import KdeSettings, block_entropies
from psaq.synth.hooks import Captured
from psaq.synth.kde import kde_entropy
from tests.reference import load_reference

COMPOSED = KdeSettings(kde=kde_entropy)  # what the fused path is measured against


def outputs_of(case: str) -> tuple[list[torch.Tensor], int, int]:
    """The official reference's attention outputs in psaq's layout (rows, N, heads·d)."""
    f, cases = load_reference("official_entropy")
    info = cases[case]
    outputs = []
    for b in range(info["blocks"]):
        official = f.get_tensor(f"{case}.block{b}.matmul2_out")
        rows, heads, n, d = official.shape
        outputs.append(official.transpose(1, 2).reshape(rows, n, heads * d))
    return outputs, heads, info["images"]


def entropies_and_grads(outputs, heads, images, prefix, kde, grad_out):
    inputs = [o.clone().requires_grad_(True) for o in outputs]
    captured = [Captured(f"block{b}", heads, x) for b, x in enumerate(inputs)]
    values = block_entropies(captured, images, prefix, kde=kde)
    grads = torch.autograd.grad(values, inputs, grad_out)
    return values, grads


@pytest.mark.parametrize("case", ["deit", "digits", "swin"])
def test_fused_official_estimator_equals_the_composed_one(case):
    """Value and gradient (float64), with a different incoming gradient for each block."""
    outputs, heads, images = outputs_of(case)
    grad_out = torch.linspace(-1.0, 2.0, len(outputs), dtype=torch.float64)
    fused, fused_grads = entropies_and_grads(outputs, heads, images, 1, KdeSettings(), grad_out)
    composed, composed_grads = entropies_and_grads(outputs, heads, images, 1, COMPOSED, grad_out)
    torch.testing.assert_close(fused, composed, rtol=1e-12, atol=0)
    for a, b in zip(fused_grads, composed_grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12 * b.abs().max().item())
    with torch.no_grad():
        captured = [Captured(f"block{b}", heads, o) for b, o in enumerate(outputs)]
        torch.testing.assert_close(block_entropies(captured, images, 1), composed, rtol=1e-12, atol=0)


def test_fused_official_estimator_in_float32_and_bf16():
    """float32 outputs: equal to the composed path to float32 rounding; bf16 outputs: computed in
    float32 and their gradient handed back in bf16."""
    outputs, heads, images = outputs_of("digits")
    grad_out = torch.ones(len(outputs))
    for dtype, rtol in ((torch.float32, 1e-5), (torch.bfloat16, 1e-5)):
        low = [o.to(dtype) for o in outputs]
        fused, fused_grads = entropies_and_grads(low, heads, images, 1, KdeSettings(), grad_out)
        composed, composed_grads = entropies_and_grads(low, heads, images, 1, COMPOSED, grad_out)
        assert fused.dtype == torch.float32
        torch.testing.assert_close(fused, composed, rtol=rtol, atol=1e-6)
        for a, b in zip(fused_grads, composed_grads):
            assert a.dtype == dtype
            torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=1e-3 * b.float().abs().max().item())


def test_fused_official_estimator_backward_twice():
    """A retained graph gives the same gradient twice (what backward returns is a new tensor).
    (No gradcheck: the grid's ends are constants by design, as in the official code, so finite
    differences that move the min or max see a gradient that autograd does not.)"""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 8, generator=g, dtype=torch.float64, requires_grad=True)  # 2 images × 2 windows
    entropy = block_entropies([Captured("b", 2, x)], 2, 1).sum()
    first = torch.autograd.grad(entropy, x, retain_graph=True)[0]
    second = torch.autograd.grad(entropy, x)[0]
    assert torch.equal(first, second) and first[:, 0].abs().sum() == 0  # token 0 is dropped
    assert first[:, 1:].abs().sum() > 0
