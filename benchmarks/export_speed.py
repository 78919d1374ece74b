"""Integer export: file sizes and ONNX Runtime CPU latency, FP32 against QDQ integer models.

    .venv/bin/python benchmarks/export_speed.py            # digits-vit and a DeiT-Tiny-shaped model at 224
    .venv/bin/python benchmarks/export_speed.py --quick    # digits-vit only

DeiT-Tiny uses random weights (speed and size do not depend on them) and is calibrated on
Gaussian noise; digits-vit is the trained default, calibrated on 32 real training images.
Writes benchmarks/results/export_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch

from psaq.data import digits_split, first_images
from psaq.models import ModelConfig, load_model, save_checkpoint
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.export import save_integer_model
from psaq.quant.onnx_export import INTEGER_OPS, export_fp32_onnx, export_onnx, integer_ops, ort_session
from psaq.report import markdown_table


def latency_ms(session, batch: np.ndarray, repeats: int) -> float:
    for _ in range(2):
        session.run(None, {"images": batch})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {"images": batch})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench(name: str, model, calib: torch.Tensor, settings, work: Path, repeats: int) -> list[dict]:
    example = calib[:1]
    fp32_path = export_fp32_onnx(model, example, work / f"{name}-fp32.onnx")
    fp32_st = save_checkpoint(model, work / f"{name}-fp32.safetensors")
    fp32_sess = ort_session(fp32_path)
    rows = []
    for w, a in settings:
        cfg = QuantConfig(w_bits=w, a_bits=a)
        q = calibrate(quantize_(copy.deepcopy(model), cfg), calib)
        q_path = export_onnx(q, cfg, example, work / f"{name}-{cfg.tag}.onnx")
        int_path = save_integer_model(q, cfg, {"name": "unused"}, work / f"{name}-{cfg.tag}.int.safetensors")
        q_sess = ort_session(q_path)
        ops = integer_ops(q_path, work)
        row = {"model": name, "setting": cfg.tag,
               "fp32_onnx_mb": fp32_path.stat().st_size / 1e6, "qdq_onnx_mb": q_path.stat().st_size / 1e6,
               "int_safetensors_mb": int_path.stat().st_size / 1e6,
               "onnx_ratio": fp32_path.stat().st_size / q_path.stat().st_size,
               "int_file_ratio": fp32_st.stat().st_size / int_path.stat().st_size,
               "integer_ops": {k: v for k, v in ops.items() if k in INTEGER_OPS}}
        for bs in (1, 32):
            batch = np.random.default_rng(0).standard_normal((bs, *calib.shape[1:])).astype(np.float32)
            row[f"fp32_ms_b{bs}"] = latency_ms(fp32_sess, batch, repeats)
            row[f"int_ms_b{bs}"] = latency_ms(q_sess, batch, repeats)
            row[f"speedup_b{bs}"] = row[f"fp32_ms_b{bs}"] / row[f"int_ms_b{bs}"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="digits-vit only")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    settings = [(8, 8), (4, 8)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        digits = load_model(ModelConfig("digits-vit"), ".", "cpu").model
        rows += bench("digits-vit", digits, first_images(digits_split("train"), 32, 0)[0], settings, work, args.repeats)
        if not args.quick:
            torch.manual_seed(0)
            deit = timm.create_model("deit_tiny_patch16_224").eval()
            noise = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
            rows += bench("deit-tiny-224 (random)", deit, noise, settings, work, max(3, args.repeats // 3))
    header = ["model", "setting", "FP32 ONNX MB", "QDQ ONNX MB (×)", "int weights MB (× vs FP32 safetensors)",
              "FP32 ms b1", "int ms b1", "FP32 ms b32", "int ms b32", "speed-up b1", "speed-up b32"]
    body = [[r["model"], r["setting"], f"{r['fp32_onnx_mb']:.2f}", f"{r['qdq_onnx_mb']:.2f} ({r['onnx_ratio']:.2f}×)",
             f"{r['int_safetensors_mb']:.2f} ({r['int_file_ratio']:.2f}×)", f"{r['fp32_ms_b1']:.2f}", f"{r['int_ms_b1']:.2f}",
             f"{r['fp32_ms_b32']:.1f}", f"{r['int_ms_b32']:.1f}", f"{r['speedup_b1']:.2f}×", f"{r['speedup_b32']:.2f}×"]
            for r in rows]
    text = markdown_table(header, body) + "\n\nInteger kernels ONNX Runtime ran: " + "; ".join(
        f"{r['model']} {r['setting']}: {r['integer_ops']}" for r in rows)
    print("\n" + text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "export_speed.md").write_text(text + "\n")
    Path(args.out, "export_speed.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
