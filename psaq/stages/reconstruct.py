"""Stage ``reconstruct``: block reconstruction of the calibrated model on its calibration images.

Off by default (the paper's method ends at calibration): the calibrated model passes through.
"""

from __future__ import annotations

import copy
import dataclasses
import json

import psaq.families.builtin  # noqa: F401 - registers the ViT/DeiT and Swin families quantized and hooked here
from psaq.device import resolve_device
from psaq.io import read_samples
from psaq.models import ModelConfig
from psaq.quant.reconstruct import ReconstructConfig, reconstruct
from psaq.quant.serialize import load_quantized, read_quant_config, save_quantized
from psaq.stages import GRAPH
from psaq.stages.common import Weights, artifact_path, device_kind, identity, load
from psaq.store import Artifact, Store

HISTORY_KEY = "psaq_reconstruct_history"  # safetensors metadata: each block's loss every 10 iterations


def run(store: Store, model: ModelConfig, weights: Weights, samples: Artifact, quantized: Artifact,
        recon: ReconstructConfig, stem: str, device: str = "auto", progress: bool = True) -> tuple[Artifact, bool]:
    if not recon.enabled:
        return quantized, False
    out = artifact_path(store, GRAPH["reconstruct"], stem, ".safetensors", identity(model, weights), samples, quantized,
                        dataclasses.asdict(recon), device_kind(device))

    def write(tmp):
        dev = resolve_device(device)
        loaded = load(model, weights, dev)
        path = quantized.verify()
        config = read_quant_config(path)
        qmodel = load_quantized(copy.deepcopy(loaded.model), path).to(dev)
        images = read_samples(samples.verify(), expect={"model": loaded.name, "weights_sha256": weights.sha256}).images
        history = reconstruct(qmodel, loaded.model, images, recon, dev, progress)
        save_quantized(qmodel.cpu(), config, tmp, {"samples_sha256": samples.sha256, "model": loaded.name,
                                                   "weights_sha256": weights.sha256, HISTORY_KEY: json.dumps(history)})

    return store.publish(out, write)


def history(path: str) -> dict[str, list[float]]:
    """The reconstruction losses recorded in a reconstructed model file ({} for a calibrated one)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        raw = (f.metadata() or {}).get(HISTORY_KEY)
    return json.loads(raw) if raw else {}
