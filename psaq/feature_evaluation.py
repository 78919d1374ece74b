"""A headless backbone scored as its users score one: k-nearest-neighbour top-1 on the test set
with the training set's features as the index, and how closely its output tokens follow the
float backbone's (cosine per token).

k-NN is the weighted vote used to evaluate self-supervised ViT backbones: the ``k`` training
images whose pooled features are most cosine-similar to a test image's each vote for their
class with weight exp(similarity / temperature). A quantized backbone builds its own index (as a
deployed one would), so its top-1 counts both the queries' and the index's quantization error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from psaq.data import loader
from psaq.errors import ConfigError, DatasetError
from psaq.evaluation import batches, ranked

SIMILARITY_CHUNK = 256  # test images per similarity block: 256 × a 60,000-image index is 123 MB of float64


@dataclass
class FeatureEvalResult:
    top1: float  # k-NN top-1, %
    top5: float
    count: int
    predictions: torch.Tensor  # k-NN class per test image, on the CPU
    correct: torch.Tensor  # per test image: the k-NN class equals the label
    index_size: int
    agreement: float | None = None  # % of test images whose k-NN class equals the reference backbone's
    cosine: float | None = None  # mean over test images of the mean cosine per token with the reference's tokens
    cosines: torch.Tensor | None = None  # that cosine per test image (float64, for paired comparisons)

    def metrics(self) -> dict[str, float]:
        out = {"top1": self.top1, "top5": self.top5, "count": float(self.count), "knn_index": float(self.index_size)}
        if self.agreement is not None:
            out["agreement"] = self.agreement
        if self.cosine is not None:
            out["feature_cosine"] = self.cosine
        return out


def outputs(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(output tokens as (batch, tokens, channels), pooled features (batch, channels)): ViT's
    tokens as they are, Swin's (B, H, W, C) grid flattened; the pooled features are what the
    headless model outputs (its pooling and final norm over the same tokens)."""
    out = model.forward_features(images)
    return (out.flatten(1, -2) if out.dim() > 3 else out), model.forward_head(out, pre_logits=True)


def cosine_per_token(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image: the mean over tokens of the cosine between ``a``'s and ``b``'s token vectors."""
    return F.cosine_similarity(a.double(), b.double(), dim=-1).mean(dim=1)


@torch.no_grad()
def features(model: nn.Module, data: DataLoader, device: str | torch.device = "cpu", desc: str = "features",
             progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features (N, C) float32 on the CPU, labels (N,))."""
    model.eval().to(device)
    feats, labels = [], []
    for images, y in batches(data, None, desc, progress):
        feats.append(outputs(model, images.to(device))[1].float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def knn_votes(index: torch.Tensor, index_labels: torch.Tensor, queries: torch.Tensor, num_classes: int, k: int = 20,
              temperature: float = 0.07) -> torch.Tensor:
    """(queries, classes) summed votes: each query's ``k`` most cosine-similar index vectors vote
    for their label with weight exp(similarity / temperature). Neighbours of equal similarity are
    taken in index order, so the result does not depend on the sort's kernel."""
    if k < 1:
        raise ConfigError(f"k-NN needs k >= 1, got {k}")
    k = min(k, len(index))
    index = F.normalize(index.double(), dim=1)
    votes = []
    for start in range(0, len(queries), SIMILARITY_CHUNK):
        q = F.normalize(queries[start:start + SIMILARITY_CHUNK].double(), dim=1)
        sims = q @ index.T
        order = torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k]
        weights = torch.exp(torch.gather(sims, 1, order) / temperature)
        v = torch.zeros(len(q), num_classes, dtype=torch.float64)
        votes.append(v.scatter_add_(1, index_labels[order], weights))
    return torch.cat(votes)


def index_images(train: Dataset | None, size: int | None, seed: int = 0) -> Dataset:
    """The training images the index holds: ``size`` of them drawn by ``seed`` without
    replacement (all when ``size`` is None or the split is smaller), in drawing order."""
    if train is None:
        raise DatasetError("a headless backbone is scored by k-NN, which needs labelled training images for its "
                           "index: pass a dataset root holding train/ and val/, or --calib-dataset PATH")
    if size is None or size >= len(train):
        return train
    g = torch.Generator().manual_seed(seed)
    return Subset(train, torch.randperm(len(train), generator=g)[:size].tolist())


@torch.no_grad()
def evaluate_features(model: nn.Module, test: DataLoader, train: Dataset | None, *, device: str | torch.device = "cpu",
                      reference: nn.Module | None = None, reference_predictions: torch.Tensor | None = None,
                      k: int = 20, temperature: float = 0.07, index_size: int | None = 10000,
                      batch_size: int = 128, limit: int | None = None, progress: bool = False) -> FeatureEvalResult:
    """k-NN top-1/top-5 of ``model``'s own features; with ``reference`` (the float backbone) the
    mean cosine per token against its output tokens; with ``reference_predictions`` the share of
    test images whose k-NN class is the reference's."""
    model.eval().to(device)
    if reference is not None:
        reference.eval().to(device)
    index, index_labels = features(model, loader(index_images(train, index_size), batch_size), device, "k-NN index",
                                   progress)
    queries, labels, cosines = [], [], []
    seen = 0
    for images, y in batches(test, limit, "k-NN queries", progress):
        images = images.to(device)
        out, pooled = outputs(model, images)
        queries.append(pooled.float().cpu())
        if reference is not None:
            cosines.append(cosine_per_token(out.cpu(), outputs(reference, images)[0].cpu()))
        labels.append(y)
        seen += len(y)
    if seen == 0:
        raise DatasetError("the evaluation dataset is empty")
    labels_t = torch.cat(labels)
    num_classes = int(max(int(index_labels.max()), int(labels_t.max()))) + 1
    top = ranked(knn_votes(index, index_labels, torch.cat(queries), num_classes, k, temperature), min(5, num_classes))
    correct = top[:, 0] == labels_t
    agreement = None
    if reference_predictions is not None:
        agreement = 100.0 * float((top[:, 0] == reference_predictions[:seen]).float().mean())
    per_image = torch.cat(cosines) if cosines else None
    return FeatureEvalResult(100.0 * float(correct.float().mean()),
                             100.0 * float((top == labels_t[:, None]).any(dim=1).float().mean()), seen, top[:, 0],
                             correct, len(index), agreement,
                             float(per_image.mean()) if per_image is not None else None, per_image)
