import math

import pytest
import torch

from psaq.synth import similarity
from psaq.synth.similarity import (cosine_similarity_matrix, mean_over_heads, pairwise_similarities,
                                   upper_triangle_similarities)


def test_cosine_similarity_on_hand_made_tokens():
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]]])
    sim = cosine_similarity_matrix(tokens)[0]
    expected = torch.tensor([
        [1.0, 0.0, -1.0, 1 / math.sqrt(2)],
        [0.0, 1.0, 0.0, 1 / math.sqrt(2)],
        [-1.0, 0.0, 1.0, -1 / math.sqrt(2)],
        [1 / math.sqrt(2), 1 / math.sqrt(2), -1 / math.sqrt(2), 1.0],
    ])
    torch.testing.assert_close(sim, expected)


def test_pairwise_drops_diagonal_and_duplicates():
    tokens = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0))
    pairs = pairwise_similarities(tokens)
    assert pairs.shape == (3, 10)
    full = torch.nn.functional.cosine_similarity(tokens[:, :, None], tokens[:, None], dim=-1)
    i, j = torch.triu_indices(5, 5, 1)
    torch.testing.assert_close(pairs, full[:, i, j])


def test_mean_over_heads():
    x = torch.arange(12.0).reshape(1, 1, 12)  # 3 heads of 4 channels
    torch.testing.assert_close(mean_over_heads(x, 3), torch.tensor([[[4.0, 5.0, 6.0, 7.0]]]))


def test_zero_token_does_not_give_nan():
    tokens = torch.zeros(1, 3, 4)
    assert torch.isfinite(pairwise_similarities(tokens)).all()


@pytest.mark.parametrize("chunk", [1 << 18, 50, 1])  # all matrices at once; two; one at a time
@pytest.mark.parametrize("offset", [0, 1])
def test_triangle_and_its_gradient_equal_the_full_matrix(offset, chunk, monkeypatch):
    """The chunked triangle of u·uᵀ and its one-product backward against autograd through the
    whole (B, N, N) matrix, float64."""
    monkeypatch.setattr(similarity, "_CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(3)
    tokens = torch.randn(5, 7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    i, j = torch.triu_indices(7, 7, offset)
    want = torch.nn.functional.cosine_similarity(tokens[:, :, None], tokens[:, None], dim=-1, eps=1e-8)[:, i, j]
    got = upper_triangle_similarities(tokens, offset)
    grad_out = torch.randn(got.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    (want_grad,) = torch.autograd.grad(want, tokens, grad_out)
    (got_grad,) = torch.autograd.grad(got, tokens, grad_out)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_a_zero_token_gets_the_gradient_of_the_clamped_norm():
    """A token whose norm is below eps is divided by eps, as F.normalize does: its gradient is the
    unit vectors' gradient over eps, without the projection term of a real norm."""
    g = torch.Generator().manual_seed(5)
    tokens = torch.randn(2, 6, 4, generator=g, dtype=torch.float64)
    tokens[0, 2] = 0.0
    tokens[1, 4] = 1e-10
    tokens.requires_grad_(True)
    unit = torch.nn.functional.normalize(tokens, dim=-1, eps=1e-8)
    i, j = torch.triu_indices(6, 6)
    want = (unit @ unit.transpose(-1, -2))[:, i, j]
    got = upper_triangle_similarities(tokens, 0)
    grad_out = torch.randn(got.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # the same divisions
    (want_grad,), (got_grad,) = torch.autograd.grad(want, tokens, grad_out), torch.autograd.grad(got, tokens, grad_out)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-12)


def test_triangle_passes_gradcheck():
    tokens = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: upper_triangle_similarities(t, 0), (tokens,))
