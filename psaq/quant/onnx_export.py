"""ONNX export of a calibrated model with QuantizeLinear/DequantizeLinear carrying its scales.

Weights are per-channel 8-bit integer initializers (QuantizeLinear folded away, so the file
holds integers): the signed grid stored as uint8 with zero point 128, because ONNX Runtime's
u8×s8 kernel saturates on x86 CPUs without VNNI and its u8×u8 kernel does not. Activations get
per-tensor uint8 Q/DQ pairs. ONNX Runtime's CPU graph optimizer
then fuses DQ → MatMul → … into integer kernels (MatMulIntegerToFloat / QLinearMatMul,
QLinearConv); ``integer_ops`` reports which ran. Bit widths below 8 are stored in 8-bit types
holding the lower-bit grid, except weights of 4 bits or fewer, which ``onnx_nbits`` stores
two per byte for ONNX Runtime's ``MatMulNBits``; the model's metadata says which. The attention
scores q·kᵀ, where both sides and the product are quantized, are rewritten for ``QLinearMatMul``
(``onnx_graph.integer_attention``), and reshapes, transposes and splits of quantized activations
move uint8 (``onnx_graph.dequantize_late``); the outputs stay the same.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from psaq.errors import ConfigError
from psaq.registry import Registry
from psaq.models.checkpoint import atomic_write
from psaq.quant.config import QuantConfig
from psaq.quant.onnx_graph import constant_values, dequantize_late, integer_attention, signed_weights
from psaq.quant.onnx_nbits import to_matmul_nbits
from psaq.quant.quantize import require_calibrated
from psaq.quant.quantizers import ActQuantizer, WeightQuantizer

OPSET = 17
INTEGER_OPS = {"MatMulInteger", "MatMulIntegerToFloat", "QLinearMatMul", "QLinearConv", "ConvInteger",
               "QGemm", "QLinearAdd", "DynamicQuantizeMatMul", "MatMulNBits"}


# How 8-bit integer weights are stored; the grid and every output are the same either way.
WEIGHT_TYPES: Registry[str] = Registry("ONNX weight type")
WEIGHT_TYPES.register("uint8")("uint8 per channel, zero point 128: ONNX Runtime's u8×u8 kernel, exact on every x86 CPU")
WEIGHT_TYPES.register("int8")("int8 per channel, zero point 0: ONNX Runtime's u8×s8 kernel, faster on CPUs with VNNI; "
                              "without VNNI it sums pairs of products in int16 and can saturate")


@dataclass(frozen=True)
class ExportConfig:
    """The ``export`` stage's settings (params.yaml ``export:``)."""

    weight_type: str = "uint8"  # see WEIGHT_TYPES
    # q·kᵀ as QLinearMatMul where both sides and the scores are quantized (same outputs, faster)
    integer_attention: bool = True
    # DequantizeLinear after reshapes, transposes and splits instead of before: they move uint8
    # (same outputs, faster)
    dequantize_late: bool = True

    def __post_init__(self):
        WEIGHT_TYPES.get(self.weight_type)


def require_onnx_path(quantizers) -> None:
    """Every activation quantizer kind with a forward of its own declares how it exports."""
    for q in quantizers:
        kind = type(q)
        if isinstance(q, ActQuantizer) and kind.forward is not ActQuantizer.forward and not any(
                "onnx_export" in vars(c) for c in kind.__mro__[:kind.__mro__.index(ActQuantizer)]):
            raise ConfigError(f"quantizer kind {kind.__name__} has a forward of its own but declares no onnx_export: "
                              "say how it reaches ONNX (\"qdq\" or \"float-ops\"), or it would export as the uniform one")


@contextmanager
def qdq_mode(model: nn.Module):
    quantizers = [m for m in model.modules() if isinstance(m, (ActQuantizer, WeightQuantizer))]
    require_onnx_path(quantizers)
    for q in quantizers:
        q.export_qdq = True
    try:
        yield model
    finally:
        for q in quantizers:
            q.export_qdq = False


_EXPORT_LOCK = threading.Lock()  # torch.onnx's TorchScript exporter keeps global state: one export at a time


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    import warnings

    with _EXPORT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), opset_version=OPSET, dynamo=False, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})


def fold_weight_quantization(onnx_model) -> int:
    """Replace QuantizeLinear(constant float weight) with the integer initializer it computes,
    so the file stores integer weights; returns how many were folded."""
    from onnx import numpy_helper

    graph = onnx_model.graph
    consts = constant_values(graph)
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and all(i in consts for i in node.input):
            x, scale, zp = (consts[i] for i in node.input)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and x.ndim > 1:
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zp_b = scale.reshape(shape), zp.reshape(shape)
            else:
                zp_b = zp
            info = np.iinfo(zp.dtype)
            q = np.clip(np.rint(x / scale) + zp_b.astype(np.int32), info.min, info.max).astype(zp.dtype)
            graph.initializer.append(numpy_helper.from_array(q, name=node.output[0]))
            folded += 1
        else:
            keep.append(node)
    used = {i for n in keep for i in n.input} | {o.name for o in graph.output}
    keep = [n for n in keep if not (n.op_type in ("Constant", "Identity") and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(keep)
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    return folded


def export_onnx(model: nn.Module, config: QuantConfig, example: torch.Tensor, path: str | Path,
                extra_metadata: dict | None = None, export: ExportConfig = ExportConfig()) -> Path:
    """Export a calibrated fake-quantized model as a QDQ ONNX model with integer weights."""
    import onnx

    require_calibrated(model)
    model = model.eval().cpu()
    example = example.cpu()

    def write(tmp: Path) -> None:
        with torch.no_grad():
            model(example)  # fills the weight quantizers' caches, so the tracer sees the integer-grid weights as constants
        with qdq_mode(model), torch.no_grad():
            _export(model, example, tmp)
        m = onnx.load(str(tmp))
        folded = fold_weight_quantization(m)
        if folded == 0:
            raise ConfigError(f"{type(model).__name__}: no quantized weights found to export")
        grid = f"the signed {config.w_bits}-bit grid [-{2 ** (config.w_bits - 1)}, {2 ** (config.w_bits - 1) - 1}]"
        nbits = to_matmul_nbits(m, config.w_bits)
        signed = export.weight_type == "int8" and signed_weights(m) > 0
        moved = dequantize_late(m) if export.dequantize_late else 0
        integer_scores = integer_attention(m) if export.integer_attention else 0
        storage = ("int8 per channel, zero point 0" if signed else "uint8 per channel, zero point 128") + f", holding {grid}"
        if nbits:
            storage = (f"{nbits} of {folded} weights as MatMulNBits (4-bit codes two per byte, zero code 8, the "
                       f"row's scale per block) holding {grid}; the others {storage}")
        meta = {
            "psaq.quant_config": json.dumps(dataclasses.asdict(config)),
            "psaq.weight_storage": storage,
            "psaq.export_config": json.dumps(dataclasses.asdict(export)),
            "psaq.integer_attention": (f"{integer_scores} attention score products q·kᵀ as QLinearMatMul (the "
                                       "scale folded into the scores' QuantizeLinear)"),
            "psaq.dequantize_late": f"{moved} DequantizeLinear moved past the reshapes, transposes and splits after them",
            "psaq.activation_storage": (f"uint8 per tensor holding the {config.a_bits}-bit grid [0, {2 ** config.a_bits - 1}]"
                                        f" (a Clip before each QuantizeLinear)" if config.a_bits < 8 else "uint8 per tensor"),
            **{f"psaq.{k}": str(v) for k, v in (extra_metadata or {}).items()},
        }
        for key, value in meta.items():
            entry = m.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(m, str(tmp))

    return atomic_write(path, write)


def export_fp32_onnx(model: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: _export(model.eval().cpu(), example.cpu(), tmp))


def ort_session(path: str | Path, threads: int | None = None, optimized_path: str | Path | None = None,
                profile_prefix: str | Path | None = None):
    """An ONNX Runtime CPU session with every graph optimization; ``optimized_path`` writes the graph
    it runs, ``profile_prefix`` turns its profiler on (``end_profiling()`` returns the file)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if optimized_path:
        options.optimized_model_filepath = str(optimized_path)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def integer_ops(path: str | Path, workdir: str | Path) -> dict[str, int]:
    """Op counts of the graph ONNX Runtime actually runs, after its optimizer."""
    import collections

    import onnx

    optimized = Path(workdir) / (Path(path).stem + ".ort-optimized.onnx")
    ort_session(path, optimized_path=optimized)
    counts = collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    return dict(sorted(counts.items()))
