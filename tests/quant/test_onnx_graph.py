"""Graph rewrites of an exported model, on small hand-built graphs run by ONNX Runtime."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from psaq.quant.onnx_graph import dequantize_late


def _moving_values_graph(scale: np.ndarray) -> onnx.ModelProto:
    """uint8 x → DequantizeLinear → Reshape → Split → (Squeeze → MatMul, Squeeze → Transpose →
    output, Squeeze → Relu), with a Shape of the dequantized tensor as a second output."""
    inits = [
        numpy_helper.from_array(scale.astype(np.float32), "s"),
        numpy_helper.from_array(np.full(scale.shape, 3, np.uint8), "z"),
        numpy_helper.from_array(np.array([2, 3, 4], np.int64), "shape"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4) / 7, "w"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"], name="dq"),
        helper.make_node("Reshape", ["xf", "shape"], ["r"], name="reshape"),
        helper.make_node("Shape", ["xf"], ["xf_shape"], name="shape_of"),
        helper.make_node("Split", ["r"], ["a", "b"], axis=0, num_outputs=2, name="split"),
        helper.make_node("Squeeze", ["a", "axis0"], ["a2"], name="squeeze_a"),
        helper.make_node("MatMul", ["a2", "w"], ["y"], name="matmul"),
        helper.make_node("Squeeze", ["b", "axis0"], ["b2"], name="squeeze_b"),
        helper.make_node("Transpose", ["b2"], ["t"], perm=[1, 0], name="transpose"),
        helper.make_node("Relu", ["b2"], ["relu"], name="relu"),
    ]
    graph = helper.make_graph(
        nodes, "moving", [helper.make_tensor_value_info("x", TensorProto.UINT8, [24])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in (("y", [3, 4]), ("t", [4, 3]), ("relu", [3, 4]))]
        + [helper.make_tensor_value_info("xf_shape", TensorProto.INT64, [1])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the graph as written
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_dequantize_moves_past_the_ops_that_only_move_values_with_the_same_outputs():
    model = _moving_values_graph(np.array(0.37))
    before = _run(model, x := np.random.default_rng(0).integers(0, 256, 24, dtype=np.uint8))
    assert dequantize_late(model) == 1
    onnx.checker.check_model(model, full_check=True)
    nodes = {n.name: n for n in model.graph.node}
    producer = {out: n for n in model.graph.node for out in n.output}
    assert "dq" not in nodes  # nothing computes with the whole dequantized tensor any more
    assert nodes["reshape"].input[0] == "x" and nodes["shape_of"].input[0] == "x"
    # a DequantizeLinear right before each op that computes, and before the graph output
    for consumer_input in (nodes["matmul"].input[0], nodes["relu"].input[0], "t"):
        assert producer[consumer_input].op_type == "DequantizeLinear"
    assert sum(n.op_type == "DequantizeLinear" for n in model.graph.node) == 3
    after = _run(model, x)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)  # exact: the same values, dequantized later


def test_per_channel_and_weight_dequantizers_stay_where_they_are():
    model = _moving_values_graph(np.array([0.1, 0.2, 0.3, 0.4] * 6))  # one scale per element: not per tensor
    assert dequantize_late(model) == 0
    assert [n.name for n in model.graph.node][0] == "dq"


@pytest.mark.parametrize("reader", ["Relu", "Shape"])
def test_a_dequantizer_read_only_by_computing_ops_is_left_alone(reader):
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"], name="dq"),
         helper.make_node(reader, ["xf"], ["y"], name="reader")],
        "plain", [helper.make_tensor_value_info("x", TensorProto.UINT8, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT if reader == "Relu" else TensorProto.INT64,
                                       [4] if reader == "Relu" else [1])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    assert dequantize_late(model) == 0
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", reader]
