"""How the fp32 and evaluate stages score a model: a classifier by its top-1 on the test set, a
headless backbone by k-NN over its own features (``psaq.feature_evaluation``)."""

from __future__ import annotations

import torch
from torch import nn

from psaq.data import DataSource
from psaq.evaluation import EvalConfig, EvalResult, evaluate
from psaq.feature_evaluation import FeatureEvalResult, evaluate_features
from psaq.input_spec import is_headless
from psaq.models import LoadedModel, ModelConfig
from psaq.sources import eval_loader, model_data, require_unchanged


class ScoredImages:
    """What a score reads, for the stages that score: the evaluation images, and for a headless
    backbone also the training images its k-NN index is drawn from (a root's train/, or
    ``calib_dataset``). Their fingerprints key the result, and are checked again after reading."""

    def __init__(self, headless: bool, dataset: str | None, calib_dataset: str | None):
        self.dataset = dataset
        self.calib_dataset = calib_dataset if headless else None
        self.parts = ("eval", "calib") if headless else ("eval",)

    def key(self, data_fp: dict) -> tuple:
        return tuple(data_fp[part] for part in self.parts)

    def open(self, loaded: LoadedModel) -> DataSource:
        return model_data(loaded, self.dataset, self.calib_dataset)

    def check_unchanged(self, model: ModelConfig, data_fp: dict, data: DataSource) -> None:
        require_unchanged(model, self.dataset, self.calib_dataset, data_fp, self.parts, data)


def score(model: nn.Module, reference: nn.Module | None, data: DataSource, cfg: EvalConfig,
          device: torch.device, reference_predictions: torch.Tensor | None = None,
          progress: bool = False) -> EvalResult | FeatureEvalResult:
    """``reference``: the float model a quantized one is compared with (its predictions, and for a
    backbone its output tokens); None when ``model`` is the float model itself."""
    test = eval_loader(data, cfg.batch_size)
    if not is_headless(model):
        return evaluate(model, test, device, reference_predictions, cfg.limit, progress)
    return evaluate_features(model, test, data.calib_set, device=device, reference=reference,
                             reference_predictions=reference_predictions, k=cfg.knn_k,
                             temperature=cfg.knn_temperature, index_size=cfg.knn_index, batch_size=cfg.batch_size,
                             limit=cfg.limit, progress=progress)
