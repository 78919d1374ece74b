"""Reading and rewriting an exported ONNX graph: the constant value behind a tensor name,
weights stored as int8 instead of uint8, DequantizeLinear moved past the ops that only move
values, and attention scores computed on integer kernels."""

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


# ops that move or select values without changing them: a tensor behind them is still on the grid
# of the DequantizeLinear before them
_VALUE_PRESERVING = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Split", "Gather", "Slice", "Flatten"}


def dequantize_late(onnx_model) -> int:
    """Move each per-tensor activation DequantizeLinear past the value-preserving ops that read it
    (reshapes, transposes, splits, squeezes: ``_VALUE_PRESERVING``, data on input 0), so that they
    move uint8 instead of float32 and a DequantizeLinear lands only where a value is computed with.
    Exact: dequantizing is elementwise with one scale and zero point, so it commutes with moving
    values. On a ViT the qkv tensor is then split into q, k and v as uint8, and q and k reach the
    scores' MatMul straight from their DequantizeLinear (no float copy of them, no re-quantizing).
    ``Shape`` readers read the integer tensor (same shape). In place; returns how many
    DequantizeLinear nodes were moved."""
    from onnx import helper

    graph = onnx_model.graph
    consts = constant_values(graph)
    nodes = list(graph.node)  # held, so that id() names each node until the rebuild
    readers: dict[str, list] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in graph.output}
    inserted: dict[int, list] = {}  # id(node) → DequantizeLinear nodes to place right after it
    dropped: set[int] = set()

    def integer_through(name: str, quantized: str, params: list[str]) -> bool:
        """Readers of float ``name`` that only move values read ``quantized`` instead, their
        outputs integer too; a DequantizeLinear after each op whose output something computes
        with. Returns whether something computes with ``name`` itself (or it is a graph output)."""
        computes = name in graph_outputs
        for node in readers.get(name, []):
            data_only = node.input[0] == name and name not in node.input[1:]
            if node.op_type in _VALUE_PRESERVING and data_only:
                node.input[0] = quantized
                for k, out in enumerate(node.output):
                    if out:
                        node.output[k] = f"{out}/quantized"
                        if integer_through(out, node.output[k], params):
                            inserted.setdefault(id(node), []).append(helper.make_node(
                                "DequantizeLinear", [node.output[k], *params], [out], name=f"{out}/DequantizeLinear"))
            elif node.op_type == "Shape" and data_only:
                node.input[0] = quantized
            else:
                computes = True
        return computes

    moved = 0
    for node in nodes:
        if (node.op_type != "DequantizeLinear" or len(node.input) != 3 or node.input[0] in consts
                or not all(i in consts and consts[i].size == 1 for i in node.input[1:3])):
            continue
        if not any(r.op_type in _VALUE_PRESERVING and r.input[0] == node.output[0]
                   for r in readers.get(node.output[0], [])):
            continue
        if not integer_through(node.output[0], node.input[0], list(node.input[1:3])):
            dropped.add(id(node))  # every reader now reads the integer tensor
        moved += 1
    if moved:
        ordered = []
        for node in nodes:
            if id(node) not in dropped:
                ordered.append(node)
            ordered += inserted.get(id(node), [])
        del graph.node[:]
        graph.node.extend(ordered)
        produced = {out for n in graph.node for out in n.output}
        for info in [v for v in graph.value_info if v.name not in produced]:
            graph.value_info.remove(info)
    return moved


def integer_attention(onnx_model) -> int:
    """Rewrite each product of two quantized activations whose scaled result is quantized
    (the attention scores, q·kᵀ·scale, at the official sites) so that ONNX Runtime runs it as
    ``QLinearMatMul``: a QuantizeLinear/DequantizeLinear pair with the source's own parameters
    right before the MatMul on each side that does not come straight from its DequantizeLinear
    (exact: the values are already on that grid), and the constant scale folded into the
    output's QuantizeLinear (``Q(y·c; s) = Q(y; s/c)``). Products
    with a float side (softmax(q·kᵀ)·v, whose probabilities the paper's sites leave float) and
    sub-8-bit outputs (a Clip sits before their QuantizeLinear) are left as they are. In place;
    returns how many were rewritten."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = onnx_model.graph
    consts = constant_values(graph)
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def scalar(name: str) -> bool:
        return name in consts and consts[name].size == 1

    def grid_of(name: str):
        """The per-tensor DequantizeLinear a tensor comes from through value-preserving ops, or None."""
        while name in producer:
            node = producer[name]
            if node.op_type == "DequantizeLinear":
                return node if all(scalar(i) for i in node.input[1:3]) and len(node.input) == 3 else None
            if node.op_type not in _VALUE_PRESERVING:
                return None
            name = node.input[0]
        return None

    inserted: dict[str, list] = {}
    removed: set[str] = set()  # the Mul nodes folded away, by output
    for node in graph.node:
        if node.op_type != "MatMul" or any(i in consts for i in node.input):
            continue
        sources = [grid_of(i) for i in node.input]
        after = readers.get(node.output[0], [])
        if None in sources or len(after) != 1 or after[0].op_type != "Mul":
            continue
        mul = after[0]
        factor = next((consts[i] for i in mul.input if i != node.output[0] and scalar(i)), None)
        quantizers = readers.get(mul.output[0], [])
        if factor is None or float(factor) <= 0 or len(quantizers) != 1 or quantizers[0].op_type != "QuantizeLinear":
            continue
        quantize = quantizers[0]
        if not scalar(quantize.input[1]):
            continue
        pairs = []
        for side, source in enumerate(sources):
            if node.input[side] == source.output[0]:
                continue  # straight from its DequantizeLinear already (``dequantize_late``)
            base = f"{node.name}/input{side}"
            params = list(source.input[1:3])
            pairs += [helper.make_node("QuantizeLinear", [node.input[side], *params], [f"{base}/q"], name=f"{base}/Q"),
                      helper.make_node("DequantizeLinear", [f"{base}/q", *params], [f"{base}/dq"], name=f"{base}/DQ")]
            node.input[side] = f"{base}/dq"
        inserted[node.output[0]] = pairs
        scale = consts[quantize.input[1]]
        folded = f"{node.name}/output_scale"
        graph.initializer.append(numpy_helper.from_array((scale / factor).astype(np.float32).reshape(scale.shape), folded))
        quantize.input[0], quantize.input[1] = node.output[0], folded
        removed.add(mul.output[0])
    nodes = []
    for node in graph.node:
        if node.output[0] in removed:
            continue
        nodes += inserted.get(node.output[0], [])
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(inserted)
