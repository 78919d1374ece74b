"""A headless backbone's scores: k-NN top-1 against a float64 brute-force vote, token cosine
against NumPy, on tiny headless ViT and Swin, float and quantized; and the failure cases."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from psaq.data import loader
from psaq.errors import ConfigError, DatasetError
from psaq.evaluation import EvalConfig
from psaq.feature_evaluation import evaluate_features, index_images, knn_votes, outputs
from psaq.quant import QuantConfig, quantized_copy
from tests.tiny import tiny_swin, tiny_vit

HEADLESS = {"vit": tiny_vit, "swin": tiny_swin}


def reference_knn(index, index_labels, queries, num_classes, k, temperature):
    """Per query, loop by loop in float64: cosine to every index vector, the k nearest (ties in
    index order), each voting exp(similarity / temperature) for its label; the top class."""
    index = np.asarray(index, np.float64)
    queries = np.asarray(queries, np.float64)
    index = index / np.linalg.norm(index, axis=1, keepdims=True)
    out = []
    for q in queries:
        sims = index @ (q / np.linalg.norm(q))
        nearest = sorted(range(len(sims)), key=lambda i: (-sims[i], i))[:k]
        votes = np.zeros(num_classes)
        for i in nearest:
            votes[index_labels[i]] += np.exp(sims[i] / temperature)
        out.append(int(np.argmax(votes)))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 5, 40])
def test_knn_votes_match_a_brute_force_float64_vote(k):
    g = torch.Generator().manual_seed(k)
    index, queries = torch.randn(30, 8, generator=g), torch.randn(17, 8, generator=g)
    labels = torch.randint(0, 4, (30,), generator=g)
    got = knn_votes(index, labels, queries, 4, k, 0.07).argmax(dim=1).numpy()
    np.testing.assert_array_equal(got, reference_knn(index, labels.numpy(), queries, 4, min(k, 30), 0.07))


def test_neighbours_of_equal_similarity_are_taken_in_index_order():
    # two copies of one vector with different labels: with k=1 the first copy decides
    index = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    votes = knn_votes(index, torch.tensor([2, 1, 0]), torch.tensor([[1.0, 0.1]]), 3, k=1)
    assert votes.argmax().item() == 2


def _data(n, seed, classes=3):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, classes, (n,), generator=g))


@pytest.mark.parametrize("family", sorted(HEADLESS))
def test_pooled_features_are_what_the_headless_model_outputs(family):
    torch.manual_seed(0)
    model = HEADLESS[family](num_classes=0)
    x = torch.randn(3, 3, 32, 32)
    tokens, pooled = outputs(model, x)
    assert tokens.dim() == 3 and tokens.shape[0] == 3
    torch.testing.assert_close(pooled, model(x), rtol=0, atol=0)


@pytest.mark.parametrize("family", sorted(HEADLESS))
def test_a_backbone_scored_by_knn_and_token_cosine_against_reference_math(family):
    torch.manual_seed(0)
    model, other = HEADLESS[family](num_classes=0), HEADLESS[family](num_classes=0)
    train, test = _data(24, 1), _data(10, 2)
    res = evaluate_features(model, loader(test, 4), train, reference=other, k=5, index_size=None, batch_size=8)
    with torch.no_grad():
        index, queries = model(train.tensors[0]), model(test.tensors[0])
        a, b = model.forward_features(test.tensors[0]), other.forward_features(test.tensors[0])
    expected = reference_knn(index, train.tensors[1].numpy(), queries, 3, 5, 0.07)
    np.testing.assert_array_equal(res.predictions.numpy(), expected)
    assert res.top1 == pytest.approx(100 * float(np.mean(expected == test.tensors[1].numpy())))
    a, b = a.reshape(10, -1, a.shape[-1]).double().numpy(), b.reshape(10, -1, b.shape[-1]).double().numpy()
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    assert res.cosine == pytest.approx(cos.mean(), rel=1e-9)
    assert res.count == 10 and res.index_size == 24
    assert set(res.metrics()) == {"top1", "top5", "count", "knn_index", "feature_cosine"}


@pytest.mark.parametrize("family", sorted(HEADLESS))
def test_a_quantized_backbone_follows_the_float_one_closer_at_more_bits(family):
    torch.manual_seed(0)
    model = HEADLESS[family](num_classes=0)
    calib = torch.randn(8, 3, 32, 32)
    train, test = _data(24, 1), _data(12, 2)
    fp32 = evaluate_features(model, loader(test, 6), train, k=5)
    same = evaluate_features(model, loader(test, 6), train, reference=model, reference_predictions=fp32.predictions, k=5)
    assert same.cosine == pytest.approx(1.0) and same.agreement == 100.0
    cosines = {}
    for bits in (8, 4):
        q = quantized_copy(model, QuantConfig(w_bits=bits, a_bits=bits), calib, "cpu")
        cosines[bits] = evaluate_features(q, loader(test, 6), train, reference=model, k=5).cosine
    assert 0.9 < cosines[8] < 1.0 and cosines[4] < cosines[8]


def test_the_index_is_a_seeded_draw_of_the_training_images():
    train = _data(50, 0)
    first, again = index_images(train, 20), index_images(train, 20)
    assert len(first) == 20 and first.indices == again.indices and len(set(first.indices)) == 20
    assert index_images(train, 100) is train and index_images(train, None) is train


def test_failures_are_one_clear_line():
    with pytest.raises(DatasetError, match="needs labelled training images"):
        index_images(None, 10)
    with pytest.raises(ConfigError, match="k >= 1"):
        knn_votes(torch.ones(2, 2), torch.zeros(2, dtype=torch.long), torch.ones(1, 2), 1, k=0)
    for bad, match in (({"knn_k": 0}, "knn_k"), ({"knn_temperature": 0}, "knn_temperature"),
                       ({"knn_index": 0}, "knn_index")):
        with pytest.raises(ConfigError, match=match):
            EvalConfig(**bad)


def test_knn_settings_key_only_a_headless_evaluation():
    assert EvalConfig(knn_k=5).key(headless=False) == EvalConfig().key(headless=False)
    assert EvalConfig(knn_k=5).key(headless=True) != EvalConfig().key(headless=True)
