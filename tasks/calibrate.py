"""Stage 3: calibrate per-layer scales on a sample set; save the fake-quantized model."""

from __future__ import annotations

from prefect import task

from psaq.errors import SampleSetError
from psaq.io import read_samples
from psaq.quant import QuantConfig
from psaq.quant.serialize import save_quantized
from psaq.workflow import quantized_copy
from tasks.artifacts import Artifact, publish, stage_cache_policy
from tasks.common import load_stage_model


@task(name="calibrate", cache_policy=stage_cache_policy(), persist_result=True)
def calibrate_model(model: dict, checkpoint: Artifact | None, samples: Artifact, quant: dict, runtime: dict,
                    out: str, code: str) -> Artifact:
    loaded, device = load_stage_model(model, checkpoint, runtime)
    sample_set = read_samples(samples.verify(), expect={"model": loaded.name})
    if tuple(sample_set.images.shape[1:]) != tuple(loaded.spec.input_size):
        raise SampleSetError(f"sample set '{samples.path}' holds images of shape {tuple(sample_set.images.shape[1:])}, "
                             f"but {loaded.name} takes {tuple(loaded.spec.input_size)}")
    cfg = QuantConfig(**quant)
    qmodel = quantized_copy(loaded.model, cfg, sample_set.images, device)
    return publish(out, lambda tmp: save_quantized(qmodel, cfg, tmp, {"samples_sha256": samples.sha256,
                                                                     "model": loaded.name}))
