"""The total-variation prior's hand-written gradient against autograd through the slices."""

import pytest
import torch

from psaq.synth import priors
from psaq.synth.priors import total_variation


def autograd_tv(x: torch.Tensor) -> torch.Tensor:
    diffs = (x[..., :, :-1] - x[..., :, 1:], x[..., :-1, :] - x[..., 1:, :],
             x[..., 1:, :-1] - x[..., :-1, 1:], x[..., :-1, :-1] - x[..., 1:, 1:])
    return sum(torch.linalg.vector_norm(d) for d in diffs)


@pytest.mark.parametrize("keep", [1 << 22, 0])  # differences kept for backward; recomputed there
@pytest.mark.parametrize("chunk", [1 << 18, 40, 1])  # all images at once; two; one at a time
def test_value_and_gradient_equal_autograd(chunk, keep, monkeypatch):
    monkeypatch.setattr(priors, "_TV_CHUNK_ELEMENTS", chunk)
    monkeypatch.setattr(priors, "_TV_KEEP_ELEMENTS", keep)
    x = torch.randn(5, 2, 4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    (want_grad,) = torch.autograd.grad(autograd_tv(x) * 3.0, x)
    got = total_variation(x)
    (got_grad,) = torch.autograd.grad(got * 3.0, x)
    torch.testing.assert_close(got, autograd_tv(x), rtol=1e-12, atol=0)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_flat_image_has_zero_gradient_not_nan():
    x = torch.ones(2, 3, 5, 5, requires_grad=True)
    total_variation(x).backward()
    assert total_variation(x).item() == 0
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_passes_gradcheck():
    x = torch.randn(2, 1, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(total_variation, (x,))
