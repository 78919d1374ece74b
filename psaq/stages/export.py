"""Stage ``export``: the calibrated model as a QDQ ONNX model and a compact integer weight file."""

from __future__ import annotations

import copy
import dataclasses
import json

import torch

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT) quantized and hooked here
from psaq.models import ModelConfig
from psaq.quant.integer_weights import save_integer_model
from psaq.quant.onnx_export import ExportConfig, export_onnx
from psaq.quant.serialize import load_quantized, read_quant_config
from psaq.stages.stage import POINT, POINT_STEM, Stage
from psaq.stages.common import Weights, artifact_path, identity, load
from psaq.store import Artifact, Store


STAGE = Stage("export", __name__, ("export",), ("model", "reconstruct"), POINT,
              (f"pipeline/exported/{POINT_STEM}.int.safetensors", f"pipeline/exported/{POINT_STEM}.onnx"), "models/exported",
              "exported")


def run(store: Store, model: ModelConfig, weights: Weights, quantized: Artifact, stem: str,
        export_cfg: ExportConfig = ExportConfig()) -> tuple[dict[str, Artifact], bool]:
    """({"integer": …, "onnx": …}, built). ``export_cfg`` shapes the ONNX model only."""
    parts = (identity(model, weights), quantized)
    int_out = artifact_path(store, STAGE, stem, ".int.safetensors", *parts)
    onnx_out = artifact_path(store, STAGE, stem, ".onnx", *parts, dataclasses.asdict(export_cfg))
    cache: dict = {}

    def qmodel():
        if not cache:
            loaded = load(model, weights, "cpu")
            path = quantized.verify()
            cache["config"] = read_quant_config(path)
            cache["model"] = load_quantized(copy.deepcopy(loaded.model), path).cpu()
            cache["spec"] = loaded.spec
        return cache["model"], cache["config"], cache["spec"]

    def write_integer(tmp):
        m, config, _ = qmodel()
        save_integer_model(m, config, {"name": model.name, "model_args": model.model_args}, tmp)

    def write_onnx(tmp):
        m, config, spec = qmodel()
        # what a user needs to feed it real images and read its outputs; the calibrated model by its
        # content hash, not by a path of this machine's store
        about = {"model": model.name, "quantized_sha256": quantized.sha256,
                 "preprocessing": json.dumps(spec.preprocessing())}
        if spec.class_names:
            about["class_names"] = json.dumps(list(spec.class_names))
        export_onnx(m, config, torch.zeros((1, *spec.input_size)), tmp, about, export_cfg)

    integer, built_int = store.publish(int_out, write_integer)
    onnx, built_onnx = store.publish(onnx_out, write_onnx)
    return {"integer": integer, "onnx": onnx}, built_int or built_onnx
