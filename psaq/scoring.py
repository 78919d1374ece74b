"""How the fp32 and evaluate stages score a model: a classifier by its top-1 on the test set, a
headless backbone by k-NN over its own features (``psaq.feature_evaluation``)."""

from __future__ import annotations

import torch
from torch import nn

from psaq.data import DataSource
from psaq.evaluation import EvalConfig, EvalResult, evaluate
from psaq.feature_evaluation import FeatureEvalResult, evaluate_features
from psaq.input_spec import is_headless
from psaq.sources import eval_loader


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
