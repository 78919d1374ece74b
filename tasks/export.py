"""Stage 5: export the calibrated model as a compact integer weight file (int8 / packed int4)."""

from __future__ import annotations

import copy

from prefect import task

from psaq.quant.export import save_integer_model
from psaq.quant.serialize import load_quantized, read_quant_config
from tasks.artifacts import Artifact, stage_cache_policy
from tasks.common import load_stage_model


@task(name="export", cache_policy=stage_cache_policy(), persist_result=True)
def export_model(model: dict, checkpoint: Artifact | None, quantized: Artifact, runtime: dict, out: str,
                 code: str) -> Artifact:
    loaded, _ = load_stage_model(model, checkpoint, runtime)
    path = quantized.verify()
    qmodel = load_quantized(copy.deepcopy(loaded.model), path)
    save_integer_model(qmodel.cpu(), read_quant_config(path),
                       {"name": model["name"], "model_args": model.get("model_args", {})}, out)
    return Artifact.of(out)
