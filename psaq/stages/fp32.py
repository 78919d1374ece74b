"""Stage ``fp32``: the float model's top-1/top-5 and per-image predictions on the evaluation set."""

from __future__ import annotations

from psaq.device import resolve_device
from psaq.evaluation import EvalConfig, evaluate
from psaq.io import write_json
from psaq.models import ModelConfig
from psaq.stages.stage import Stage
from psaq.stages.common import Weights, artifact_path, device_kind, identity, load
from psaq.stats import pack_correct
from psaq.store import Artifact, Store
from psaq.sources import eval_loader, model_data, require_unchanged


STAGE = Stage("fp32", __name__, ("eval", "runtime"), ("model", "data"), ("train_seed",),
              ("pipeline/fp32/m{train_seed}.json",), "metrics/fp32", "fp32", kind="metrics")


def run(store: Store, model: ModelConfig, weights: Weights, eval_cfg: EvalConfig, data_fp: dict, dataset: str | None,
        device: str = "auto", progress: bool = False) -> tuple[Artifact, bool]:
    out = artifact_path(store, STAGE, model.name, ".json", identity(model, weights), eval_cfg.__dict__,
                        data_fp["eval"], device_kind(device))

    def write(tmp):
        dev = resolve_device(device)
        loaded = load(model, weights, dev)
        data = model_data(loaded, dataset)
        res = evaluate(loaded.model, eval_loader(data, eval_cfg.batch_size), dev, limit=eval_cfg.limit,
                       progress=progress)
        require_unchanged(model, dataset, None, data_fp, data=data)
        write_json(tmp, {**res.metrics(), "predictions": res.predictions.tolist(),
                         "correct": pack_correct(res.correct.numpy()),
                         "exif_rotated": len(getattr(data.eval_set, "rotated", ()))})

    return store.publish(out, write)
