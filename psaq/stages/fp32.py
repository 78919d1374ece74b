"""Stage ``fp32``: the float model's top-1/top-5 and per-image predictions on the evaluation set
(a headless backbone's by k-NN over its features, with training images as the index)."""

from __future__ import annotations

from psaq.device import resolve_device
from psaq.evaluation import EvalConfig
from psaq.io import write_json
from psaq.models import ModelConfig
from psaq.stages.stage import Stage
from psaq.scoring import ScoredImages, score
from psaq.stages.common import Weights, artifact_path, device_kind, identity, load
from psaq.stats import pack_correct
from psaq.store import Artifact, Store


STAGE = Stage("fp32", __name__, ("eval", "runtime"), ("model", "data"), ("train_seed",),
              ("pipeline/fp32/m{train_seed}.json",), "metrics/fp32", "fp32", kind="metrics")


def run(store: Store, model: ModelConfig, weights: Weights, eval_cfg: EvalConfig, data_fp: dict, dataset: str | None,
        calib_dataset: str | None, device: str = "auto", progress: bool = False) -> tuple[Artifact, bool]:
    images = ScoredImages(weights.headless, dataset, calib_dataset)
    out = artifact_path(store, STAGE, model.name, ".json", identity(model, weights), eval_cfg.key(weights.headless),
                        *images.key(data_fp), device_kind(device))

    def write(tmp):
        dev = resolve_device(device)
        loaded = load(model, weights, dev)
        data = images.open(loaded)
        res = score(loaded.model, None, data, eval_cfg, dev, progress=progress)
        images.check_unchanged(model, data_fp, data)
        write_json(tmp, {**res.metrics(), "predictions": res.predictions.tolist(),
                         "correct": pack_correct(res.correct.numpy()),
                         "exif_rotated": len(getattr(data.eval_set, "rotated", ()))})

    return store.publish(out, write)
