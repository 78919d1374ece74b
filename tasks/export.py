"""Stage 5: export the calibrated model: a QDQ ONNX model and a compact integer weight file."""

from __future__ import annotations

import copy

from prefect import task

from psaq.quant.export import save_integer_model
from psaq.quant.onnx_export import export_onnx
from psaq.quant.serialize import load_quantized, read_quant_config
from tasks.artifacts import Artifact, publish, stage_cache_policy
from tasks.common import load_stage_model


@task(name="export", cache_policy=stage_cache_policy(), persist_result=True)
def export_model(model: dict, checkpoint: Artifact | None, quantized: Artifact, runtime: dict, out: str,
                 code: str) -> dict:
    """``out``: the integer safetensors file; the ONNX model goes beside it (``.onnx``)."""
    import torch

    loaded, _ = load_stage_model(model, checkpoint, runtime)
    path = quantized.verify()
    config = read_quant_config(path)
    qmodel = load_quantized(copy.deepcopy(loaded.model), path).cpu()
    build = {"name": model["name"], "model_args": model.get("model_args", {})}
    integer = publish(out, lambda tmp: save_integer_model(qmodel, config, build, tmp))
    onnx_out = out.removesuffix(".int.safetensors") + ".onnx"
    example = torch.zeros((1, *loaded.spec.input_size))
    onnx = publish(onnx_out, lambda tmp: export_onnx(qmodel, config, example, tmp, {"model": model["name"], "source": path.name}))
    return {"integer": integer, "onnx": onnx}
