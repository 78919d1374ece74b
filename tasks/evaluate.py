"""Stage 4: top-1/top-5 of the float model and of a quantized one, with agreement; metrics as JSON."""

from __future__ import annotations

import copy

import torch
from prefect import task

from psaq.evaluate import EvalConfig, evaluate
from psaq.io import read_json, write_json
from psaq.quant.serialize import load_quantized
from psaq.workflow import eval_loader
from tasks.artifacts import Artifact, publish, stage_cache_policy
from tasks.common import load_stage_model


@task(name="evaluate-fp32", cache_policy=stage_cache_policy(), persist_result=True)
def evaluate_fp32(model: dict, checkpoint: Artifact | None, eval: dict, runtime: dict, out: str, code: str) -> Artifact:
    loaded, device = load_stage_model(model, checkpoint, runtime)
    cfg = EvalConfig(**eval)
    res = evaluate(loaded.model, eval_loader(loaded, runtime.get("dataset"), cfg.batch_size), device, limit=cfg.limit)
    return publish(out, lambda tmp: write_json(tmp, {**res.metrics(), "predictions": res.predictions.tolist()}))


@task(name="evaluate", cache_policy=stage_cache_policy(), persist_result=True)
def evaluate_quantized(model: dict, checkpoint: Artifact | None, quantized: Artifact, fp32: Artifact, eval: dict,
                       runtime: dict, out: str, code: str) -> dict:
    loaded, device = load_stage_model(model, checkpoint, runtime)
    cfg = EvalConfig(**eval)
    reference = read_json(fp32.verify())
    qmodel = load_quantized(copy.deepcopy(loaded.model), quantized.verify())
    res = evaluate(qmodel, eval_loader(loaded, runtime.get("dataset"), cfg.batch_size), device,
                   torch.tensor(reference["predictions"]), cfg.limit)
    metrics = {**res.metrics(), "fp32_top1": reference["top1"], "fp32_top5": reference["top5"]}
    artifact = publish(out, lambda tmp: write_json(tmp, metrics))
    return {"metrics": read_json(artifact.verify()), "artifact": artifact}
