"""Reading and rewriting an exported ONNX graph: the constant value behind a tensor name, and
weights stored as int8 instead of uint8."""

from __future__ import annotations

import numpy as np

from psaq.quant.quantizers import ONNX_WEIGHT_ZERO_POINT


def constant_values(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    # the exporter shares equal constants through Identity nodes
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def signed_weights(onnx_model, stored_zero_point: int = ONNX_WEIGHT_ZERO_POINT) -> int:
    """Store each uint8 weight with zero point ``stored_zero_point`` as int8 with zero point 0 (the
    same values), in place; returns how many. Activations stay uint8."""
    from onnx import numpy_helper

    graph = onnx_model.graph
    values = constant_values(graph)
    initializers = {init.name: init for init in graph.initializer}
    converted = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in initializers or len(node.input) < 3:
            continue
        stored, zero = values[node.input[0]], values.get(node.input[2])
        if stored.dtype != np.uint8 or stored.ndim < 2 or zero is None or not (zero == stored_zero_point).all():
            continue
        signed = (stored.astype(np.int16) - stored_zero_point).astype(np.int8)
        initializers[node.input[0]].CopyFrom(numpy_helper.from_array(signed, node.input[0]))
        zero_name = f"{node.input[0]}.zero_point"
        graph.initializer.append(numpy_helper.from_array(np.zeros(zero.shape, np.int8), zero_name))
        node.input[2] = zero_name
        converted += 1
    used = {name for n in graph.node for name in n.input}
    kept = [n for n in graph.node if not (n.op_type in ("Constant", "Identity") and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept)
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return converted
