"""Weights of 4 bits or fewer as ONNX Runtime's ``MatMulNBits``: stored two per byte, run by its
4-bit kernel.

The QDQ export stores every weight grid in a uint8 initializer (zero point 128), so a W4 model
is as large as a W8 one and runs the 8-bit kernels. Here each per-channel weight DequantizeLinear
feeding a MatMul (through the exporter's Transpose) or a Gemm (transB) becomes one
``com.microsoft.MatMulNBits`` node: codes q + 8 packed low nibble first along K in blocks, every
block of a row carrying that row's scale, and no zero-point input (the operator's default for 4
bits is 8). The grid [-2^(b-1), 2^(b-1) - 1] of 2, 3 or 4 bits sits inside the 4-bit one, so the
weights the kernel dequantizes are exactly the simulated model's. ``accuracy_level`` 0 keeps
the activations in float32 (they are already on their 8-bit grid; the kernel's int8 mode would
re-quantize them per block).
"""

from __future__ import annotations

import numpy as np

from psaq.quant.onnx_graph import constant_values
from psaq.quant.quantizers import ONNX_WEIGHT_ZERO_POINT as STORED_ZERO_POINT

NBITS = 4
ZERO_CODE = 1 << (NBITS - 1)  # the operator's default zero point for 4-bit codes
BLOCK_SIZES = (16, 32, 64, 128, 256)  # those ONNX Runtime's CPU kernels take
ACCURACY_LEVEL = 0  # float32 activations: exact on the simulated model's grid


def block_size(k: int) -> int:
    """The block length whose packed codes and per-block scales take the fewest bytes for a row
    of ``k`` weights (ties: the longer block, fewer scales to apply)."""
    cost = lambda b: -(-k // b) * (b * NBITS // 8 + 4)  # noqa: E731
    return min(reversed(BLOCK_SIZES), key=cost)


def pack_rows(codes: np.ndarray, block: int) -> np.ndarray:
    """(N, K) codes in [0, 15] → (N, k_blocks, block/2) bytes, low nibble first, the last block
    padded with the zero code."""
    n, k = codes.shape
    blocks = -(-k // block)
    padded = np.full((n, blocks * block), ZERO_CODE, dtype=np.uint8)
    padded[:, :k] = codes
    pairs = padded.reshape(n, blocks, block // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)


def to_matmul_nbits(onnx_model, w_bits: int) -> int:
    """Rewrite every per-channel integer weight with its MatMul/Gemm as MatMulNBits, in place;
    returns how many. Weights that do not fit (another pattern, a grid wider than 4 bits) stay."""
    from onnx import helper, numpy_helper

    if w_bits > NBITS:
        return 0
    graph = onnx_model.graph
    values = constant_values(graph)
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replace: dict[int, list] = {}  # index of the node to replace → nodes that take its place
    drop: set[int] = set()
    index = {id(node): i for i, node in enumerate(graph.node)}
    for dq in graph.node:
        if dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
            continue
        stored, scale, zero = (values.get(name) for name in dq.input[:3])
        if stored is None or scale is None or zero is None or stored.ndim != 2 or scale.ndim != 1:
            continue
        if not (zero == STORED_ZERO_POINT).all():
            continue
        users = consumers.get(dq.output[0], [])
        if len(users) != 1:
            continue
        user = users[0]
        if user.op_type == "Transpose":
            matmuls = consumers.get(user.output[0], [])
            if len(matmuls) != 1 or matmuls[0].op_type != "MatMul" or matmuls[0].input[1] != user.output[0]:
                continue
            target, a, bias, out = matmuls[0], matmuls[0].input[0], None, matmuls[0].output[0]
            drop.add(index[id(user)])
        elif user.op_type == "Gemm" and user.input[1] == dq.output[0]:
            attrs = {a.name: helper.get_attribute_value(a) for a in user.attribute}
            if attrs.get("transB", 0) != 1 or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
                continue
            target, a, out = user, user.input[0], user.output[0]
            bias = user.input[2] if len(user.input) > 2 and user.input[2] else None
        else:
            continue
        n, k = stored.shape
        codes = stored.astype(np.int16) - STORED_ZERO_POINT + ZERO_CODE
        if codes.min() < 0 or codes.max() >= 1 << NBITS:
            continue  # a grid wider than 4 bits: leave it to the 8-bit kernels
        block = block_size(k)
        name = dq.input[0]
        packed_name, scales_name = f"{name}.nbits", f"{name}.nbits_scales"
        graph.initializer.append(numpy_helper.from_array(pack_rows(codes.astype(np.uint8), block), packed_name))
        scales = np.repeat(scale.astype(np.float32)[:, None], -(-k // block), axis=1)
        graph.initializer.append(numpy_helper.from_array(scales, scales_name))
        product = out if bias is None else f"{out}.nbits"
        nodes = [helper.make_node("MatMulNBits", [a, packed_name, scales_name], [product], name=f"{target.name}.nbits",
                                  domain="com.microsoft", K=k, N=n, bits=NBITS, block_size=block,
                                  accuracy_level=ACCURACY_LEVEL)]
        if bias is not None:
            nodes.append(helper.make_node("Add", [product, bias], [out], name=f"{target.name}.bias"))
        replace[index[id(target)]] = nodes
        drop.add(index[id(dq)])
    if not replace:
        return 0
    kept = []
    for i, node in enumerate(graph.node):
        if i in replace:
            kept.extend(replace[i])
        elif i not in drop:
            kept.append(node)
    # the scales and zero points the dropped nodes read through Identity/Constant nodes
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    kept = [n for n in kept if not (n.op_type in ("Constant", "Identity") and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)
    if not any(op.domain == "com.microsoft" for op in onnx_model.opset_import):
        onnx_model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replace)
