"""ONNX export with QDQ nodes: parity with the simulated model on digits, integer kernels in ONNX Runtime."""

import copy

import numpy as np
import onnx
import pytest
import torch

import psaq.families.builtin  # noqa: F401 - the tests quantize these families
from psaq.data import first_images
from psaq.datasets.digits import digits_split
from psaq.errors import NotCalibratedError
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.onnx_export import export_fp32_onnx, export_onnx, integer_ops, ort_session


@pytest.mark.parametrize("sites", ["official", "compact", "repq"])
@pytest.mark.parametrize("w_bits,a_bits", [(8, 8), (4, 8)])
def test_onnx_top1_matches_simulated_model(tmp_path, trained_digits, w_bits, a_bits, sites):
    cfg = QuantConfig(w_bits=w_bits, a_bits=a_bits, sites=sites)
    calib, _ = first_images(digits_split("train"), 32, seed=0)
    q = calibrate(quantize_(copy.deepcopy(trained_digits), cfg), calib)
    path = export_onnx(q, cfg, calib[:2], tmp_path / "q.onnx")
    test = digits_split("test")
    x, y = test.tensors
    with torch.no_grad():
        sim = q(x).numpy()
    ort = ort_session(path).run(None, {"images": x.numpy()})[0]
    top1_sim = 100 * float((sim.argmax(1) == y.numpy()).mean())
    top1_ort = 100 * float((ort.argmax(1) == y.numpy()).mean())
    per_image = np.abs(ort - sim).max(1)
    off = int((per_image > 0.1 * np.abs(sim).max()).sum())
    print(f"{sites} W{w_bits}A{a_bits}: simulated {top1_sim:.2f}, ONNX Runtime {top1_ort:.2f}, largest logit diff "
          f"{per_image.max():.4f}, images off by > 10 % of the largest logit: {off}")
    assert abs(top1_ort - top1_sim) <= 0.3
    # The two round a value that lands on a rounding boundary differently (ONNX rounds x/s, then adds z;
    # its Log differs from torch's log2 in the last bit), which moves one level of one activation: a
    # rare large difference on an image or two. A wrong export moves every image.
    assert np.median(per_image) < 1e-3 and off <= 0.01 * len(per_image)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert f"signed {w_bits}-bit grid" in meta["psaq.weight_storage"]


def test_matmuls_run_as_integer_kernels_and_weights_are_integers(tmp_path, trained_digits):
    cfg = QuantConfig()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    q = calibrate(quantize_(copy.deepcopy(trained_digits), cfg), x)
    path = export_onnx(q, cfg, x[:2], tmp_path / "q.onnx")
    ops = integer_ops(path, tmp_path)
    assert ops.get("MatMulIntegerToFloat", 0) + ops.get("QLinearMatMul", 0) >= 4 * 2  # qkv, proj, fc1, fc2 per block
    m = onnx.load(str(path))
    weights = [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.UINT8 and len(i.dims) == 2]
    assert len(weights) >= 8
    fp32 = export_fp32_onnx(trained_digits, x[:2], tmp_path / "fp32.onnx")
    assert path.stat().st_size < fp32.stat().st_size / 2.5


def test_export_of_a_freshly_loaded_model(tmp_path, trained_digits):
    """A model rebuilt from a file has never run: its weight caches are empty when tracing starts."""
    from psaq.quant.serialize import load_quantized, save_quantized

    cfg = QuantConfig()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    q = calibrate(quantize_(copy.deepcopy(trained_digits), cfg), x)
    saved = save_quantized(q, cfg, tmp_path / "q.safetensors")
    fresh = load_quantized(copy.deepcopy(trained_digits), saved)
    path = export_onnx(fresh, cfg, x[:1], tmp_path / "q.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Round" not in ops and "QuantizeLinear" in ops


def test_low_activation_bits_keep_their_grid(tmp_path, trained_digits):
    """At 4 bits every activation QuantizeLinear must clip to 16 levels. Real digits, seeded, at 3x
    their contrast so that every tensor leaves its calibrated range: with the Clip, 3 of 64 images
    move (a value on a rounding boundary, as above; median difference 0); without it, 64 of 64
    (median 1.66). The bound, 10 images, sits between the two by a wide margin."""
    cfg = QuantConfig(w_bits=4, a_bits=4)
    calib, _ = first_images(digits_split("train"), 32, seed=0)
    x, _ = first_images(digits_split("test"), 64, seed=1)
    x = 3 * x  # far outside the calibrated ranges: every tensor must clip to its 16 levels
    q = calibrate(quantize_(copy.deepcopy(trained_digits), cfg), calib)
    path = export_onnx(q, cfg, calib[:2], tmp_path / "q.onnx")
    ort = ort_session(path).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        sim = q(x).numpy()
    per_image = np.abs(ort - sim).max(1)
    off = int((per_image > 0.1 * np.abs(sim).max()).sum())
    print(f"W4A4: largest logit diff {per_image.max():.4f}, median {np.median(per_image):.2e}, images off: {off} of 64")
    assert np.median(per_image) < 1e-3 and off <= 10
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert "4-bit grid" in meta["psaq.activation_storage"]


def test_uncalibrated_or_float_models_are_refused(tmp_path, trained_digits):
    with pytest.raises(NotCalibratedError):
        export_onnx(copy.deepcopy(trained_digits), QuantConfig(), torch.zeros(1, 3, 32, 32), tmp_path / "a.onnx")
    q = quantize_(copy.deepcopy(trained_digits), QuantConfig())
    with pytest.raises(NotCalibratedError, match="never calibrated"):
        export_onnx(q, QuantConfig(), torch.zeros(1, 3, 32, 32), tmp_path / "b.onnx")
    assert not list(tmp_path.iterdir())


def _cpu_has_vnni() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_vnni" in flags or " avx_vnni" in flags


def test_int8_weights_hold_the_same_grid_and_run_as_integer_kernels(tmp_path, trained_digits):
    """export.weight_type int8 stores each weight as (uint8 − 128) with zero point 0: the same
    values for ONNX Runtime's u8×s8 kernel."""

    from psaq.quant.onnx_export import ExportConfig
    from psaq.quant.onnx_graph import constant_values

    cfg = QuantConfig()
    x = digits_split("test").tensors[0][:64]
    q = calibrate(quantize_(copy.deepcopy(trained_digits), cfg), x[:16])
    paths = {t: export_onnx(q, cfg, x[:1], tmp_path / f"{t}.onnx", export=ExportConfig(weight_type=t)) for t in ("uint8", "int8")}

    def weights(path):
        graph = onnx.load(str(path)).graph
        values = constant_values(graph)
        return {n.name: (values[n.input[0]], values[n.input[2]]) for n in graph.node
                if n.op_type == "DequantizeLinear" and "weight_quantizer" in n.name}

    unsigned, signed = weights(paths["uint8"]), weights(paths["int8"])
    assert unsigned.keys() == signed.keys() and len(signed) >= 8
    for name, (w, zero) in signed.items():
        assert w.dtype == np.int8 and (zero == 0).all()
        np.testing.assert_array_equal(w.astype(np.int16), unsigned[name][0].astype(np.int16) - 128)
    assert integer_ops(paths["int8"], tmp_path).get("MatMulIntegerToFloat", 0) >= 8
    meta = {p.key: p.value for p in onnx.load(str(paths["int8"])).metadata_props}
    assert meta["psaq.weight_storage"].startswith("int8 per channel, zero point 0")
    if _cpu_has_vnni():  # without VNNI the u8×s8 kernel sums pairs in int16 and may saturate: the reason uint8 is the default
        out = {t: ort_session(p).run(None, {"images": x.numpy()})[0] for t, p in paths.items()}
        np.testing.assert_allclose(out["int8"], out["uint8"], rtol=0, atol=1e-5)


def test_an_unknown_weight_type_is_refused():
    from psaq.errors import UnknownNameError
    from psaq.quant.onnx_export import ExportConfig

    with pytest.raises(UnknownNameError, match="did you mean int8"):
        ExportConfig(weight_type="int9")


def _w8a8_exports(model, x, tmp_path, flag: str) -> dict:
    """The test model at W8A8, calibrated on 32 training digits, exported with the ``ExportConfig``
    switch ``flag`` on (key True) and off (key False)."""
    from psaq.quant.onnx_export import ExportConfig

    cfg = QuantConfig(w_bits=8, a_bits=8)
    q = calibrate(quantize_(copy.deepcopy(model), cfg), first_images(digits_split("train"), 32, 0)[0])
    return {on: export_onnx(q, cfg, x[:2], tmp_path / f"q-{flag}-{on}.onnx", export=ExportConfig(**{flag: on}))
            for on in (True, False)}


def test_attention_scores_run_on_integer_kernels_with_the_same_outputs(tmp_path, trained_digits):
    """q·kᵀ with both sides and the scores quantized (the official sites) runs as QLinearMatMul:
    one per block; the rewrite only moves the scale into the scores' QuantizeLinear, so the
    logits stay those of the plain QDQ graph. Sub-8-bit scores keep their Clip and are left alone."""
    x = digits_split("test").tensors[0][:96]
    paths = _w8a8_exports(trained_digits, x, tmp_path, "integer_attention")
    blocks = len(trained_digits.blocks)
    assert integer_ops(paths[True], tmp_path).get("QLinearMatMul", 0) == blocks
    assert integer_ops(paths[False], tmp_path).get("QLinearMatMul", 0) == 0
    meta = {p.key: p.value for p in onnx.load(str(paths[True])).metadata_props}
    assert meta["psaq.integer_attention"].startswith(f"{blocks} attention score products")
    logits = {on: ort_session(p, 1).run(None, {"images": x.numpy()})[0] for on, p in paths.items()}
    assert (logits[True].argmax(1) == logits[False].argmax(1)).mean() >= 0.99
    spread = float(logits[False].max() - logits[False].min())
    np.testing.assert_allclose(logits[True], logits[False], atol=0.01 * spread)

    low = QuantConfig(w_bits=8, a_bits=4)
    q4 = calibrate(quantize_(copy.deepcopy(trained_digits), low), x[:32])
    path4 = export_onnx(q4, low, x[:2], tmp_path / "q4.onnx")
    assert {p.key: p.value for p in onnx.load(str(path4)).metadata_props}["psaq.integer_attention"].startswith("0 ")


def test_late_dequantize_splits_qkv_as_integers_with_identical_logits(tmp_path, trained_digits):
    """The qkv tensor is reshaped, split and transposed as uint8 (one DequantizeLinear moved per
    block); q and k then need no re-quantizing before QLinearMatMul. An exact rewrite: the
    logits are those of the graph that dequantizes first, to the bit."""
    x = digits_split("test").tensors[0][:64]
    paths = _w8a8_exports(trained_digits, x, tmp_path, "dequantize_late")
    blocks = len(trained_digits.blocks)
    meta = {p.key: p.value for p in onnx.load(str(paths[True])).metadata_props}
    assert meta["psaq.dequantize_late"].startswith(f"{blocks} DequantizeLinear moved")
    ops = {late: integer_ops(p, tmp_path) for late, p in paths.items()}
    assert ops[True]["QLinearMatMul"] == ops[False]["QLinearMatMul"] == blocks
    assert ops[True]["QuantizeLinear"] == ops[False]["QuantizeLinear"] - 2 * blocks  # q and k, no longer re-quantized
    logits = {late: ort_session(p, 1).run(None, {"images": x.numpy()})[0] for late, p in paths.items()}
    np.testing.assert_array_equal(logits[True], logits[False])
