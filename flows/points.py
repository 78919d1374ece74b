"""The stage graph of one grid point, shared by the quantize and grid flows.

load model → synthesize → calibrate → evaluate → export; every stage is a cached task
that receives artifact paths and content hashes, and writes to a content-addressed path.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass


from psaq.models.registry import MODELS
from tasks.artifacts import Artifact, content_path, refreshing_if_missing
from tasks.calibrate import calibrate_model
from tasks.evaluate import evaluate_fp32, evaluate_quantized
from tasks.export import export_model
from tasks.params import Params, parse_bits
from tasks.settings import code_version
from tasks.synthesize import synthesize_samples
from tasks.train import train_model, user_checkpoint


@dataclass(frozen=True)
class Point:
    train_seed: int
    method: str
    seed: int
    bits: str
    observer: str

    @property
    def name(self) -> str:
        return f"{self.method}-s{self.seed}-{self.bits}-{self.observer}-m{self.train_seed}"


def asdict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def model_dict(params: Params, train_seed: int) -> dict:
    return {**asdict(params.model), "train_seed": train_seed}


def load_checkpoint_stage(params: Params, train_seed: int) -> Artifact | None:
    """Stage 1: the user's checkpoint, or the self-trained digits-vit (cached), or timm weights (None)."""
    if params.model.checkpoint:
        return user_checkpoint(model_dict(params, train_seed))
    entry = MODELS.get(params.model.name) if params.model.name in MODELS else None
    if entry is None or entry.default_checkpoint is None or params.model.pretrained:
        return None
    train = {**asdict(params.train), "seed": train_seed}
    out = content_path("models", f"{params.model.name}-seed{train_seed}", ".safetensors", train)
    return refreshing_if_missing(train_model, out)(train=train, out=out, code=code_version())


def submit_fp32(params: Params, train_seed: int, checkpoint: Artifact | None):
    model, runtime, ev = model_dict(params, train_seed), asdict(params.runtime), asdict(params.eval)
    out = content_path("metrics/fp32", f"{params.model.name}", ".json", model, checkpoint, runtime, ev)
    return refreshing_if_missing(evaluate_fp32, out).submit(model=model, checkpoint=checkpoint, eval=ev,
                                                            runtime=runtime, out=out, code=code_version())


def submit_point(params: Params, point: Point, checkpoint: Artifact | None, fp32_future, samples_cache: dict) -> dict:
    """Submit the stages of one point; returns its futures. Sample sets are shared between the
    points that differ only in bit width (``samples_cache``), so a bit change never resynthesizes."""
    code = code_version()
    model, runtime = model_dict(params, point.train_seed), asdict(params.runtime)
    synthesis = {**asdict(params.synthesis), "method": point.method, "seed": point.seed}
    w_bits, a_bits = parse_bits(point.bits)
    quant = {**asdict(params.quant), "w_bits": w_bits, "a_bits": a_bits, "act_observer": point.observer}
    key = (point.train_seed, point.method, point.seed)
    if key not in samples_cache:
        out = content_path("data/samples", f"{params.model.name}-{point.method}-seed{point.seed}", ".parquet",
                           model, checkpoint, synthesis)
        samples_cache[key] = (refreshing_if_missing(synthesize_samples, out).submit(
            model=model, checkpoint=checkpoint, synthesis=synthesis, runtime=runtime, out=out, code=code), out)
    samples, samples_path = samples_cache[key]
    q_out = content_path("models/quantized", point.name, ".safetensors", model, checkpoint, synthesis, quant)
    quantized = refreshing_if_missing(calibrate_model, q_out).submit(
        model=model, checkpoint=checkpoint, samples=samples, quant=quant, runtime=runtime, out=q_out, code=code)
    m_out = content_path("metrics/points", point.name, ".json", model, checkpoint, synthesis, quant, asdict(params.eval))
    metrics = refreshing_if_missing(evaluate_quantized, m_out).submit(
        model=model, checkpoint=checkpoint, quantized=quantized, fp32=fp32_future, eval=asdict(params.eval),
        runtime=runtime, out=m_out, code=code)
    e_out = content_path("models/exported", point.name, ".int.safetensors", model, checkpoint, synthesis, quant)
    exported = refreshing_if_missing(export_model, e_out).submit(
        model=model, checkpoint=checkpoint, quantized=quantized, runtime=runtime, out=e_out, code=code)
    return {"point": point, "samples": samples, "samples_path": samples_path, "quantized": quantized,
            "metrics": metrics, "exported": exported, "config": {"model": model, "synthesis": synthesis, "quant": quant}}


def share_cores(params: Params) -> Params:
    """With ``runtime.threads: null``, give each of the ``max_concurrency`` concurrent tasks an
    equal share of the cores: oversubscribed torch threads run slower than fewer threads each."""
    if params.runtime.threads:
        return params
    threads = max(1, (os.cpu_count() or 1) // params.grid.max_concurrency)
    return dataclasses.replace(params, runtime=dataclasses.replace(params.runtime, threads=threads))
