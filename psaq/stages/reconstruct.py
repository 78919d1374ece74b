"""Stage ``reconstruct``: what runs on the calibrated model before it is evaluated.

``--calib psaq-v2``: PSAQ-ViT V2's teacher-student loop (``psaq.quant.adaptive``) evolves the
samples and the quantized model together. Block reconstruction (``reconstruct.enabled``, psaq's
option) then tunes block by block, on V2's final samples where V2 ran. With neither (the paper's
PSAQ-ViT ends at calibration) the calibrated model passes through.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT) quantized and hooked here
from psaq.device import resolve_device
from psaq.io import read_samples
from psaq.models import ModelConfig
from psaq.quant.adaptive import AdaptiveConfig, adapt
from psaq.quant.reconstruct import ReconstructConfig, reconstruct
from psaq.quant.serialize import load_quantized, read_quant_config, save_quantized
from psaq.stages.stage import POINT, POINT_STEM, Stage
from psaq.stages.common import Weights, artifact_path, device_kind, identity, load
from psaq.store import Artifact, Store
from psaq.synth import SynthesisConfig
from psaq.synth.methods import method_of

HISTORY_KEY = "psaq_reconstruct_history"  # safetensors metadata: each block's loss every 10 iterations
ADAPTIVE_PREFIX = "adaptive."  # V2's per-round figures in that history


STAGE = Stage("reconstruct", __name__, ("reconstruct", "adaptive", "synthesis", "runtime"), ("model", "samples", "calibrate"),
              POINT, (f"pipeline/reconstructed/{POINT_STEM}.safetensors",), "models/reconstructed", "quantized")


def run(store: Store, model: ModelConfig, weights: Weights, samples: Artifact, quantized: Artifact,
        recon: ReconstructConfig, stem: str, device: str = "auto", progress: bool = True,
        synth: SynthesisConfig | None = None, adaptive: AdaptiveConfig = AdaptiveConfig()) -> tuple[Artifact, bool]:
    v2 = synth is not None and method_of(synth.method).co_evolves
    if not recon.enabled and not v2:
        return quantized, False
    # V2 reads the synthesis settings (its prior) and its own; they key only the points it runs on
    v2_parts = (dataclasses.asdict(synth), dataclasses.asdict(adaptive)) if v2 else ()
    out = artifact_path(store, STAGE, stem, ".safetensors", identity(model, weights), samples, quantized,
                        dataclasses.asdict(recon), device_kind(device), *v2_parts)

    def write(tmp):
        dev = resolve_device(device)
        loaded = load(model, weights, dev)
        path = quantized.verify()
        config = read_quant_config(path)
        qmodel = load_quantized(copy.deepcopy(loaded.model), path).to(dev)
        images = read_samples(samples.verify(), expect={"model": loaded.name, "weights_sha256": weights.sha256}).images
        history = {}
        if v2:
            images, rounds = adapt(qmodel, loaded.model, images, synth, adaptive, loaded.spec, dev, progress)
            history.update({f"{ADAPTIVE_PREFIX}{k}": v for k, v in rounds.items()})
        if recon.enabled:
            history.update(reconstruct(qmodel, loaded.model, images, recon, dev, progress))
        save_quantized(qmodel.cpu(), config, tmp, {"samples_sha256": samples.sha256, "model": loaded.name,
                                                   "weights_sha256": weights.sha256, HISTORY_KEY: json.dumps(history)})

    return store.publish(out, write)


def history(path: str) -> dict[str, list[float]]:
    """The figures recorded in a reconstructed model file: block reconstruction's losses and V2's
    per-round figures (``adaptive.…``); {} for a calibrated one."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        raw = (f.metadata() or {}).get(HISTORY_KEY)
    return json.loads(raw) if raw else {}


def kept_round(rounds: dict[str, list[float]]) -> tuple[int, int] | None:
    """(round kept, rounds run) when V2's checks handed back an earlier round's student than its
    last (a check ended above its start); None when they did not, or V2 did not run."""
    kept, run = rounds.get(f"{ADAPTIVE_PREFIX}kept_round"), len(rounds.get(f"{ADAPTIVE_PREFIX}entropy", []))
    return (int(kept[0]), run) if kept and int(kept[0]) != run else None
