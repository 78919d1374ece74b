"""Top-1 / top-5 and agreement with the full-precision model, batched on any device."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from psaq.input_spec import is_headless
from psaq import cancel
from psaq.errors import ConfigError


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 128
    limit: int | None = None  # evaluate only the first N images (quick looks)
    # a headless backbone (no classifier) is scored by k-NN over its pooled features
    # (``psaq.feature_evaluation``): neighbours, vote temperature, training images in the index
    knn_k: int = 20
    knn_temperature: float = 0.07
    knn_index: int | None = 10000

    def key(self, headless: bool) -> dict:
        """The settings a result depends on: the k-NN ones for a headless backbone only."""
        return {k: v for k, v in self.__dict__.items() if headless or not k.startswith("knn_")}

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"eval.batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.knn_k, int) or self.knn_k < 1:
            raise ConfigError(f"eval.knn_k must be a positive integer, got {self.knn_k!r}")
        if not isinstance(self.knn_temperature, (int, float)) or not self.knn_temperature > 0:
            raise ConfigError(f"eval.knn_temperature must be a positive number, got {self.knn_temperature!r}")
        if self.knn_index is not None and (not isinstance(self.knn_index, int) or self.knn_index < 1):
            raise ConfigError(f"eval.knn_index must be a positive integer or null (every training image), "
                              f"got {self.knn_index!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ConfigError(f"eval.limit must be a positive integer or null, got {self.limit!r}")


def ranked(logits: torch.Tensor, k: int = 1) -> torch.Tensor:
    """The ``k`` highest classes of each row, best first, ties broken toward the lower class index,
    as ``argmax`` breaks them in torch and NumPy: the one definition of a prediction in psaq, so
    the evaluation, the ONNX check and the reports count a tied image the same way (``topk`` leaves
    the order of ties unspecified)."""
    return torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :k]


def tied_top(logits: torch.Tensor) -> torch.Tensor:
    """Per row: whether the highest logit is shared by another class (coarse grids make these)."""
    if logits.shape[1] < 2:
        return torch.zeros(logits.shape[0], dtype=torch.bool)
    top2 = torch.sort(logits, dim=1, descending=True).values[:, :2]
    return top2[:, 0] == top2[:, 1]


@dataclass
class EvalResult:
    top1: float
    top5: float
    count: int
    predictions: torch.Tensor  # top-1 class per image, on the CPU
    agreement: float | None = None  # % of images whose top-1 equals the reference model's
    correct: torch.Tensor | None = None  # per image: top-1 equals the label (for paired statistics)
    tied: int = 0  # images whose highest logit two classes share (counted for the lower index)

    def metrics(self) -> dict[str, float]:
        out = {"top1": self.top1, "top5": self.top5, "count": float(self.count), "tied": float(self.tied)}
        if self.agreement is not None:
            out["agreement"] = self.agreement
        return out


def batches(data: DataLoader, limit: int | None, desc: str, progress: bool = False):
    """(images, labels) batches of ``data`` up to ``limit`` images in all (the last one cut),
    with a progress bar; a stop request ends the work between batches."""
    seen = 0
    for images, labels in tqdm(data, desc=desc, disable=not progress, unit="batch"):
        cancel.check()
        if limit is not None and seen >= limit:
            break
        if limit is not None:
            images, labels = images[: limit - seen], labels[: limit - seen]
        seen += len(labels)
        yield images, labels


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: DataLoader,
    device: str | torch.device = "cpu",
    reference_predictions: torch.Tensor | None = None,
    limit: int | None = None,
    progress: bool = False,
) -> EvalResult:
    if is_headless(model):  # its outputs are features: a top-1 over them means nothing
        raise ConfigError(f"{type(model).__name__} has no classifier (num_classes=0): score a headless backbone by "
                          "k-NN over its features (psaq.feature_evaluation.evaluate_features, or psaq.evaluate with "
                          "train=)")
    model.eval().to(device)
    correct1 = correct5 = seen = ties = 0
    preds, hits = [], []
    for images, labels in batches(data, limit, "evaluate", progress):
        logits = model(images.to(device)).float().cpu()
        topk = ranked(logits, min(5, logits.shape[1]))
        ties += int(tied_top(logits).sum())
        correct1 += int((topk[:, 0] == labels).sum())
        correct5 += int((topk == labels[:, None]).any(dim=1).sum())
        seen += len(labels)
        preds.append(topk[:, 0])
        hits.append(topk[:, 0] == labels)
    if seen == 0:
        raise ConfigError("the evaluation dataset is empty")
    predictions = torch.cat(preds)
    agreement = None
    if reference_predictions is not None:
        agreement = 100.0 * float((predictions == reference_predictions[:seen]).float().mean())
    return EvalResult(100.0 * correct1 / seen, 100.0 * correct5 / seen, seen, predictions, agreement, torch.cat(hits),
                      ties)
