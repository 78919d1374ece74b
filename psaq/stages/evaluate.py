"""Stage ``evaluate``: the quantized model's top-1/top-5, agreement with FP32, per-image results (a
headless backbone's by k-NN over its own features, and its tokens' cosine with the float ones)."""

from __future__ import annotations

import copy

import torch

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT) quantized and hooked here
from psaq.device import resolve_device
from psaq.evaluation import EvalConfig
from psaq.io import read_json, write_json
from psaq.models import ModelConfig
from psaq.quant.serialize import load_quantized
from psaq.stages.stage import POINT, POINT_STEM, Stage
from psaq.scoring import ScoredImages, score
from psaq.stages.common import Weights, artifact_path, device_kind, identity, load
from psaq.stats import pack_correct
from psaq.store import Artifact, Store


STAGE = Stage("evaluate", __name__, ("eval", "runtime"), ("model", "data", "fp32", "reconstruct"), POINT,
              (f"pipeline/metrics/{POINT_STEM}.json",), "metrics/points", "metrics", kind="metrics")


def run(store: Store, model: ModelConfig, weights: Weights, quantized: Artifact, fp32: Artifact, eval_cfg: EvalConfig,
        data_fp: dict, dataset: str | None, calib_dataset: str | None, stem: str,
        device: str = "auto") -> tuple[Artifact, bool]:
    images = ScoredImages(weights.headless, dataset, calib_dataset)
    out = artifact_path(store, STAGE, stem, ".json", identity(model, weights), quantized, fp32,
                        eval_cfg.key(weights.headless), *images.key(data_fp), device_kind(device))

    def write(tmp):
        dev = resolve_device(device)
        loaded = load(model, weights, dev)
        reference = read_json(fp32.verify())
        qmodel = load_quantized(copy.deepcopy(loaded.model), quantized.verify())
        data = images.open(loaded)
        res = score(qmodel, loaded.model, data, eval_cfg, dev, torch.tensor(reference["predictions"]))
        images.check_unchanged(model, data_fp, data)
        write_json(tmp, {**res.metrics(), "fp32_top1": reference["top1"], "fp32_top5": reference["top5"],
                         "correct": pack_correct(res.correct.numpy()), "exif_rotated": reference.get("exif_rotated", 0)})

    return store.publish(out, write)
