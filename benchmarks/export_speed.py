"""psaq's ONNX exports side by side with FP32 and with ONNX Runtime's own quantizer, on the CPU.

    .venv/bin/python benchmarks/export_speed.py            # digits-vit, fashion-swin, DeiT-Tiny 224 (~4 min once trained)
    .venv/bin/python benchmarks/export_speed.py --quick    # digits-vit only

For each model, one FP32 ONNX export and from it:

* psaq W8A8 and W4A8 (the paper's quantizers, official sites): QDQ with integer weights (8-bit
  ones as uint8, the default, and as int8, ``export.weight_type: int8``), 4-bit weights as
  MatMulNBits, the attention scores q·kᵀ on QLinearMatMul, reshapes and splits of quantized
  activations in uint8; and W8A8 with int8 weights and one of those two rewrites undone (the
  scores in float, ``export.integer_attention: false``; DequantizeLinear before the reshapes,
  ``export.dequantize_late: false``), to show what each gains;
* ONNX Runtime's ``quantize_static`` of the same FP32 ONNX (QDQ, per-channel int8 weights, uint8
  activations, min/max calibration): the tool a user would otherwise pick.

Every quantizer is calibrated on the same 32 images: real training images where the model has a
training set (digits-vit, fashion-swin), Gaussian noise for DeiT-Tiny (random weights: speed does
not depend on them, and it has no test set, so its accuracy columns are agreement with FP32 on
noise). Latency: the median of repeated runs at batch 1 and 32, the variants timed in turns so that
drift hits them alike, ONNX Runtime with 2 intra-op threads. Top-1 on the model's test set; for
psaq's exports also agreement with psaq's simulated (fake-quantized) model. Ops by type: the graph
ONNX Runtime runs after its optimizer.

Writes benchmarks/results/export_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import timm
import torch

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT)
from psaq.data import first_images
from psaq.models import ModelConfig
from psaq.stages import model as model_stage
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.onnx_export import INTEGER_OPS, ExportConfig, export_fp32_onnx, export_onnx, ort_session
from psaq.report import markdown_table
from psaq.sources import model_data

THREADS = 2
CALIB_IMAGES = 32
SETTINGS = ((8, 8), (4, 8))
# psaq's exports of each setting (W4 gets the first only): the default, int8 weights, and int8
# weights with one graph rewrite undone each, to show what it gains
EXPORTS = (("", ExportConfig()),
           (" int8 weights", ExportConfig(weight_type="int8")),
           (" int8 weights, float q·kᵀ", ExportConfig(weight_type="int8", integer_attention=False)),
           (" int8 weights, DQ before reshapes", ExportConfig(weight_type="int8", dequantize_late=False)))


def ort_quantize_static(fp32_path: Path, calib: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"images": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    quiet = logging.getLogger()
    level, quiet.level = quiet.level, logging.ERROR  # its per-tensor advice (pre-processing, axes of 1-D weights)
    try:
        quantize_static(str(fp32_path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        quiet.level = level
    return out


def ops_run(path: Path, work: Path) -> dict[str, int]:
    optimized = work / (path.stem + ".ort-optimized.onnx")
    ort_session(path, THREADS, optimized_path=optimized)
    return dict(collections.Counter(n.op_type for n in onnx.load(str(optimized)).graph.node).most_common())


def time_by_op(path: Path, batch: np.ndarray, work: Path, runs: int = 4) -> dict[str, float]:
    """ms per run spent in each op type, from ONNX Runtime's profiler: kernel time over ``runs``
    runs, the first (warm-up) run left out."""
    session = ort_session(path, THREADS, profile_prefix=work / f"{path.stem}-profile")
    for _ in range(runs + 1):
        session.run(None, {"images": batch})
    events = json.loads(Path(session.end_profiling()).read_text())
    warm_up_end = min(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
    totals = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= warm_up_end:
            totals[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return dict(totals.most_common())


def predict(session, images: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([session.run(None, {"images": images[i:i + batch]})[0].argmax(1)
                           for i in range(0, len(images), batch)])


def latencies(sessions: dict, batch: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms per run of each session, timed in turns."""
    for s in sessions.values():
        s.run(None, {"images": batch})
    times = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {"images": batch})
            times[name].append((time.perf_counter() - t) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def bench(name: str, model, calib: torch.Tensor, test: tuple[np.ndarray, np.ndarray | None], work: Path,
          repeats: int) -> list[dict]:
    """Rows for one model: FP32, psaq per setting, ONNX Runtime's quantize_static."""
    images, labels = test
    paths = {"FP32": export_fp32_onnx(model, calib[:1], work / f"{name}-fp32.onnx")}
    simulated = {}
    for w, a in SETTINGS:
        cfg = QuantConfig(w_bits=w, a_bits=a)
        q = calibrate(quantize_(copy.deepcopy(model), cfg), calib)
        with torch.no_grad():
            sim = np.concatenate([q(torch.from_numpy(images[i:i + 128])).argmax(1).numpy()
                                  for i in range(0, len(images), 128)])
        for k, (suffix, export) in enumerate(EXPORTS if w == 8 else EXPORTS[:1]):
            variant = f"psaq {cfg.tag}{suffix}"
            paths[variant] = export_onnx(q, cfg, calib[:1], work / f"{name}-{cfg.tag}-{k}.onnx", export=export)
            simulated[variant] = sim
    paths["ORT quantize_static W8A8"] = ort_quantize_static(paths["FP32"], calib.numpy(), work / f"{name}-ort.onnx")
    sessions = {variant: ort_session(path, THREADS) for variant, path in paths.items()}
    predictions = {variant: predict(s, images) for variant, s in sessions.items()}
    batch32 = images[:32] if len(images) >= 32 else np.resize(images, (32, *images.shape[1:]))
    timing = {1: latencies(sessions, images[:1], 3 * repeats), 32: latencies(sessions, batch32, repeats)}
    fp32_mb = paths["FP32"].stat().st_size / 1e6
    rows = []
    for variant, path in paths.items():
        ops = ops_run(path, work)
        pred = predictions[variant]
        row = {"model": name, "variant": variant, "file_mb": path.stat().st_size / 1e6,
               "smaller": fp32_mb / (path.stat().st_size / 1e6),
               "ms_b1": timing[1][variant], "ms_b32": timing[32][variant],
               "speedup_b1": timing[1]["FP32"] / timing[1][variant], "speedup_b32": timing[32]["FP32"] / timing[32][variant],
               "top1": None if labels is None else 100 * float((pred == labels).mean()),
               "agree_fp32": 100 * float((pred == predictions["FP32"]).mean()),
               "agree_simulated": (100 * float((pred == simulated[variant]).mean())) if variant in simulated else None,
               "simulated_top1": (100 * float((simulated[variant] == labels).mean()))
               if variant in simulated and labels is not None else None,
               "integer_ops": {k: v for k, v in ops.items() if k in INTEGER_OPS},
               "float_ops": {k: v for k, v in ops.items() if k not in INTEGER_OPS}, "images": len(images),
               "ms_by_op_b32": time_by_op(path, batch32, work),
               "threads": THREADS}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def trained(name: str, checkpoint: str | None = None) -> tuple:
    loaded = model_stage.load(".", ModelConfig(name, checkpoint=checkpoint), "cpu")
    data = model_data(loaded)
    calib = first_images(data.calib_set, CALIB_IMAGES, 0)[0]
    x, y = data.eval_set.tensors
    return loaded.model, calib, (x.numpy(), y.numpy())


def deit_tiny() -> tuple:
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224").eval()
    g = torch.Generator().manual_seed(0)
    calib = torch.randn(CALIB_IMAGES, 3, 224, 224, generator=g)
    return model, calib, (torch.randn(64, 3, 224, 224, generator=g).numpy(), None)


def cpu_name() -> str:
    """The processor and its integer-matmul features: int8 speed-ups differ between CPUs."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown processor")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    features = [label for flag, label in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"), ("amx_int8", "AMX int8"))
                if flag in flags]
    return name + (f" with {', '.join(features)}" if features else "")


def fmt(v, spec: str, none: str = "–") -> str:
    return none if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="digits-vit only")
    ap.add_argument("--repeats", type=int, default=10, help="timed runs per variant at batch 32 (3x at batch 1)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=FILE",
                    help="weights for a model instead of the store's (or training it), e.g. "
                         "fashion-swin=models/fashion-swin-m0-<key>.safetensors")
    args = ap.parse_args()
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    torch.set_num_threads(THREADS)
    models = {"digits-vit": lambda: trained("digits-vit", checkpoints.get("digits-vit"))}
    if not args.quick:
        models |= {"fashion-swin": lambda: trained("fashion-swin", checkpoints.get("fashion-swin")),
                   "deit-tiny-224 (random)": deit_tiny}
    deit_repeats = max(3, args.repeats // 2)  # a DeiT-Tiny run at batch 32 takes 0.3-0.8 s
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in models.items():
            model, calib, test = build()
            rows += bench(name, model, calib, test, Path(tmp), args.repeats if "deit" not in name else deit_repeats)
    header = ["model", "variant", "file MB (× smaller)", "ms b1", "ms b32", "speed-up b1", "speed-up b32",
              "top-1", "agrees with simulated", "integer kernels ONNX Runtime ran"]
    body = [[r["model"], r["variant"], f"{r['file_mb']:.2f} ({r['smaller']:.1f}×)", f"{r['ms_b1']:.2f}",
             f"{r['ms_b32']:.1f}", f"{r['speedup_b1']:.2f}×", f"{r['speedup_b32']:.2f}×",
             fmt(r["top1"], ".2f", f"{r['agree_fp32']:.1f} % = FP32"), fmt(r["agree_simulated"], ".2f") + (" %" if r["agree_simulated"] is not None else ""),
             ", ".join(f"{k} {v}" for k, v in r["integer_ops"].items()) or "none"] for r in rows]
    floats = "\n".join(f"- {r['model']}, {r['variant']}: " + ", ".join(f"{k} {v}" for k, v in r["float_ops"].items())
                       for r in rows)
    by_op = "\n".join(f"- {r['model']}, {r['variant']}: {sum(r['ms_by_op_b32'].values()):.1f} ms: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in list(r["ms_by_op_b32"].items())[:10]) for r in rows)
    text = (f"ONNX Runtime on the CPU ({cpu_name()}), {THREADS} intra-op threads; median of {args.repeats} runs at "
            f"batch 32 and {3 * args.repeats} at batch 1 ({deit_repeats} and {3 * deit_repeats} on DeiT-Tiny), variants "
            f"timed in turns. Calibration: {CALIB_IMAGES} images, the same for every quantizer.\n\n" + markdown_table(header, body)
            + "\n\nFloat ops left in the graph ONNX Runtime runs:\n\n" + floats
            + "\n\nWhere the time goes at batch 32 (ONNX Runtime's profiler: kernel ms per run, by op type; "
              "the total is the kernels' sum, without the session's own overhead):\n\n" + by_op)
    print("\n" + text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "export_speed.md").write_text(text + "\n")
    Path(args.out, "export_speed.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
