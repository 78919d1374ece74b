"""Stage ``samples``: a calibration set (synthesized, noise or real images) as Parquet with its provenance."""

from __future__ import annotations

import dataclasses

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT) quantized and hooked here
from psaq.device import resolve_device
from psaq.io import SampleSet, write_samples
from psaq.models import ModelConfig
from psaq.stages.stage import Stage
from psaq.stages.common import Weights, artifact_path, device_kind, identity, load
from psaq.store import Artifact, Store
from psaq.synth import SynthesisConfig, synthesize
from psaq.synth.methods import method_of
from psaq.sources import model_data, real_source, require_unchanged


STAGE = Stage("samples", __name__, ("synthesis", "runtime"), ("model", "data"), ("train_seed", "method", "seed"),
              ("pipeline/samples/m{train_seed}/{method}-s{seed}.parquet",), "data/samples", "samples")


def run(store: Store, model: ModelConfig, weights: Weights, synth: SynthesisConfig, data_fp: dict, dataset: str | None,
        calib_dataset: str | None, device: str = "auto", progress: bool = True) -> tuple[Artifact, bool]:
    # only a mode that reads data (`real`) is keyed by the evaluation images too, because whether its draw
    # holds test images (refused, see psaq.sources.real_source) depends on them
    needs_data = method_of(synth.method).needs_data
    calib = (data_fp["calib"], data_fp["eval"]) if needs_data else None
    out = artifact_path(store, STAGE, f"{model.name}-{synth.method}-s{synth.seed}", ".parquet",
                        identity(model, weights), dataclasses.asdict(synth), calib, device_kind(device))

    def write(tmp):
        dev = resolve_device(device)
        loaded = load(model, weights, dev)
        source = real_source(model_data(loaded, dataset, calib_dataset)) if needs_data else None
        result = synthesize(loaded.model, synth, loaded.spec, dev, source, progress)
        if needs_data:
            require_unchanged(model, dataset, calib_dataset, data_fp, ("calib", "eval"))
        metadata = {
            "model": loaded.name,
            "weights_sha256": weights.sha256,
            "input_shape": list(loaded.spec.input_size),
            "seed": synth.seed,
            "method": synth.method,
            "config": dataclasses.asdict(synth),
            "steps": result.steps,
            "final": {k: result.final(k) for k in ("loss", "entropy", "ce", "tv")},
            "history": {k: v for k, v in result.history.items() if k != "lr"},
            "wall_s": result.wall_s,
            "steps_per_s": result.steps_per_s if result.steps else None,
            "device": str(dev),
        }
        write_samples(tmp, SampleSet(result.images, result.labels, metadata))

    return store.publish(out, write)
