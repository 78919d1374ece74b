"""Stage ``calibrate``: per-layer scales from a sample set; the fake-quantized model as safetensors."""

from __future__ import annotations

import dataclasses

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT) quantized and hooked here
from psaq.device import resolve_device
from psaq.errors import SampleSetError
from psaq.io import read_samples
from psaq.models import ModelConfig
from psaq.quant import QuantConfig
from psaq.quant.serialize import save_quantized
from psaq.stages.stage import POINT, POINT_STEM, Stage
from psaq.stages.common import Weights, artifact_path, device_kind, identity, load
from psaq.store import Artifact, Store
from psaq.quant import quantized_copy


STAGE = Stage("calibrate", __name__, ("quant", "runtime"), ("model", "samples"), POINT,
              (f"pipeline/quantized/{POINT_STEM}.safetensors",), "models/quantized", "quantized")


def run(store: Store, model: ModelConfig, weights: Weights, samples: Artifact, quant: QuantConfig, stem: str,
        device: str = "auto") -> tuple[Artifact, bool]:
    out = artifact_path(store, STAGE, stem, ".safetensors", identity(model, weights), samples,
                        dataclasses.asdict(quant), device_kind(device))

    def write(tmp):
        dev = resolve_device(device)
        loaded = load(model, weights, dev)
        sample_set = read_samples(samples.verify(), expect={"model": loaded.name, "weights_sha256": weights.sha256})
        if tuple(sample_set.images.shape[1:]) != tuple(loaded.spec.input_size):
            raise SampleSetError(f"sample set '{samples.path}' holds images of shape {tuple(sample_set.images.shape[1:])}, "
                                 f"but {loaded.name} takes {tuple(loaded.spec.input_size)}")
        qmodel = quantized_copy(loaded.model, quant, sample_set.images, dev)
        save_quantized(qmodel.cpu(), quant, tmp, {"samples_sha256": samples.sha256, "model": loaded.name,
                                                  "weights_sha256": weights.sha256})

    return store.publish(out, write)
