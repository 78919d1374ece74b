"""Stage 2: synthesize a calibration set and write it as Parquet with its provenance."""

from __future__ import annotations

from prefect import task

from psaq.io import SampleSet, write_samples
from psaq.synth import SynthesisConfig, synthesize
from psaq.workflow import real_source
from tasks.artifacts import Artifact, publish, stage_cache_policy
from tasks.common import load_stage_model


@task(name="synthesize", cache_policy=stage_cache_policy(), persist_result=True)
def synthesize_samples(model: dict, checkpoint: Artifact | None, synthesis: dict, runtime: dict, out: str,
                       code: str) -> Artifact:
    cfg = SynthesisConfig(**synthesis)
    return publish(out, lambda tmp: _synthesize(model, checkpoint, cfg, synthesis, runtime, tmp, code))


def _synthesize(model: dict, checkpoint, cfg: SynthesisConfig, synthesis: dict, runtime: dict, out, code: str) -> None:
    loaded, device = load_stage_model(model, checkpoint, runtime)
    result = synthesize(loaded.model, cfg, loaded.spec, device, real_source(loaded, runtime.get("dataset")))
    metadata = {
        "model": loaded.name,
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "seed": cfg.seed,
        "method": cfg.method,
        "config": synthesis,
        "steps": result.steps,
        "final": {k: result.final(k) for k in ("loss", "entropy", "ce", "tv")},
        "history": {k: v for k, v in result.history.items() if k != "lr"},
        "wall_s": result.wall_s,
        "steps_per_s": result.steps_per_s if result.steps else None,
        "device": str(device),
        "code_version": code,
    }
    write_samples(out, SampleSet(result.images, result.labels, metadata))
