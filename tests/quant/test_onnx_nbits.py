"""Weights of 4 bits or fewer exported as ONNX Runtime's MatMulNBits: packed two per byte, run by
its 4-bit kernel, the same outputs as the simulated model."""

import copy

import numpy as np
import onnx
import pytest
import torch

from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.onnx_export import export_onnx, integer_ops, ort_session
from psaq.quant.onnx_nbits import BLOCK_SIZES, ZERO_CODE, block_size, pack_rows, to_matmul_nbits
from tests.tiny import tiny_model  # noqa: F401  (fixture)


def unpack_reference(packed: np.ndarray, k: int) -> np.ndarray:
    """(N, blocks, block/2) bytes → (N, K) codes, one nibble at a time, low nibble first."""
    n = packed.shape[0]
    out = np.zeros((n, packed.shape[1] * packed.shape[2] * 2), dtype=np.uint8)
    for row in range(n):
        flat = packed[row].reshape(-1)
        for j, byte in enumerate(flat):
            out[row, 2 * j] = byte & 0x0F
            out[row, 2 * j + 1] = byte >> 4
    assert (out[:, k:] == ZERO_CODE).all(), "padding must be the zero code"
    return out[:, :k]


@pytest.mark.parametrize("k,block", [(48, 16), (70, 32), (192, 64), (768, 256)])
def test_packing_round_trips_through_a_nibble_by_nibble_unpack(k, block):
    codes = np.random.default_rng(k).integers(0, 16, size=(5, k), dtype=np.uint8)
    packed = pack_rows(codes, block)
    assert packed.shape == (5, -(-k // block), block // 2) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_reference(packed, k), codes)


@pytest.mark.parametrize("k", [48, 70, 192, 384, 768, 1000])
def test_the_block_size_stores_a_row_in_the_fewest_bytes(k):
    def stored_bytes(block):  # packed codes plus one float32 scale per block, as written
        return pack_rows(np.zeros((1, k), dtype=np.uint8), block).nbytes + 4 * -(-k // block)

    assert stored_bytes(block_size(k)) == min(stored_bytes(b) for b in BLOCK_SIZES)


def _export(tmp_path, model, w_bits, name):
    cfg = QuantConfig(w_bits=w_bits, a_bits=8)
    x = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    q = calibrate(quantize_(copy.deepcopy(model), cfg), x[:8])
    return q, x, export_onnx(q, cfg, x[:1], tmp_path / name)


@pytest.mark.parametrize("w_bits", [4, 3])
def test_low_bit_linears_run_as_matmul_nbits_with_the_simulated_outputs(tmp_path, tiny_model, w_bits):
    q, x, path = _export(tmp_path, tiny_model, w_bits, "w4.onnx")
    linears = sum(isinstance(m, torch.nn.Linear) for m in tiny_model.modules())
    ops = integer_ops(path, tmp_path)
    assert ops.get("MatMulNBits") == linears, ops
    assert "MatMulIntegerToFloat" not in ops and "QGemm" not in ops
    with torch.no_grad():
        sim = q(x).numpy()
    out = ort_session(path).run(None, {"images": x.numpy()})[0]
    # The logits are on an 8-bit grid; an activation that lands on a rounding boundary can round the
    # other way in ONNX Runtime and move a logit by a level or two (the 8-bit kernels do the same:
    # on the tiny Swin about half its logits move by up to 2 levels at W8A8 too). Wrong weights or
    # scales would move logits by many levels and change the predictions.
    level = (sim.max() - sim.min()) / 255
    assert np.abs(out - sim).max() <= 3 * level
    assert (out.argmax(1) == sim.argmax(1)).mean() >= 11 / 12
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert f"{linears} of" in meta["psaq.weight_storage"] and "MatMulNBits" in meta["psaq.weight_storage"]


def test_four_bit_weights_take_half_the_bytes_of_eight_bit_ones(tmp_path):
    from tests.tiny import tiny_vit

    torch.manual_seed(0)
    model = tiny_vit(embed_dim=96, num_heads=3)
    sizes = {}
    for w_bits in (8, 4):
        path = _export(tmp_path, model, w_bits, f"w{w_bits}.onnx")[2]
        m = onnx.load(str(path))
        sizes[w_bits] = sum(i.ByteSize() for i in m.graph.initializer if i.data_type == onnx.TensorProto.UINT8)
    weights = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "pos_embed" not in n)
    assert sizes[8] >= weights  # one byte per weight
    assert sizes[4] < 0.55 * sizes[8]  # half a byte per weight, plus padding


def test_eight_bit_grids_are_left_to_the_8_bit_kernels(tmp_path):
    from tests.tiny import tiny_vit

    torch.manual_seed(0)
    path = _export(tmp_path, tiny_vit(), 8, "w8.onnx")[2]
    m = onnx.load(str(path))
    assert to_matmul_nbits(m, 8) == 0
    assert "MatMulNBits" not in integer_ops(path, tmp_path)
