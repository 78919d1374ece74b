import math

import torch

from psaq.synth.similarity import cosine_similarity_matrix, mean_over_heads, pairwise_similarities


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
