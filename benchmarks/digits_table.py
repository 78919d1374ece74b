"""The embedded benchmark: calibration modes × bit settings on digits-vit, mean ± std over seeds,
with the official numerics (the default) and each of psaq's named options measured against them.

    .venv/bin/python benchmarks/digits_table.py                # 2 trained models × 3 synthesis seeds
    .venv/bin/python benchmarks/digits_table.py --models 0 --seeds 0 --variants official   # a quick look

Variants (each changes one thing; paired with the official default on the same model, seed and
test images):
    official                      the official code's numerics (psaq's default)
    unique-pairs                  psaq's entropy estimator (unique pairs, a grid per image); psaq mode only
    compact-sites                 psaq's earlier, smaller quantizer site set
    quantized-weight-calibration  activation ranges taken with rounded weights

Prints (and writes to benchmarks/results/): the accuracy tables, what moved against the tables
made before the faithful numerics (``digits_table_before_faithful.json``), the paired
differences of each variant with 95 % bootstrap intervals, synthesis steps/s, and the
patch-similarity entropy per block of real, noise and synthesized images.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tables import add_output_args, digits_model, measure_and_write  # benchmarks/tables.py

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT)
from psaq.data import first_images
from psaq.evaluation import evaluate
from psaq.quant import QuantConfig
from psaq.report import accuracy_table, fmt_mean_std, markdown_table, mean_std
from psaq.stats import pack_correct, paired_difference, unpack_correct
from psaq.synth import SynthesisConfig, synthesize
from psaq.synth.analysis import entropy_per_block
from psaq.quant import quantized_copy

MODES = ["real", "psaq", "psaq-noent", "gaussian", "gaussian-clamped"]
SETTINGS = [(8, 8), (4, 8), (6, 6), (8, 5), (8, 4), (4, 4)]
LOW_BIT = {(6, 6), (8, 5), (8, 4), (4, 4)}  # activations ≤ 6 bits: also run the better range rules
OBSERVERS = ["minmax", "percentile", "mse"]
VARIANTS = {
    "official": dict(synth={}, quant={}),
    "unique-pairs": dict(synth={"entropy_estimator": "unique-pairs"}, quant={}, modes=["psaq"]),
    "compact-sites": dict(synth={}, quant={"sites": "compact"}),
    "quantized-weight-calibration": dict(synth={}, quant={"calibrate_with_quantized_weights": True}),
}
SUMMARY_COLUMNS = ["W8A8 minmax", "W4A8 minmax", "W6A6 minmax", "W8A4 minmax", "W8A4 mse", "W4A4 mse"]
BEFORE = Path("benchmarks/results/digits_table_before_faithful.json")


def run(args) -> dict:
    device = torch.device("cpu")
    records, fp32_top1, speeds, entropies = [], [], defaultdict(list), {}
    started = time.perf_counter()
    for model_seed in args.models:
        m = digits_model(model_seed, args.cache_dir, device)
        loaded, data, batches, fp, source = m.loaded, m.data, m.batches, m.fp32, m.source
        fp32_top1.append(fp.top1)
        entropies.setdefault("real (test)", []).append(entropy_per_block(loaded.model, first_images(data.eval_set, 32, 0)[0]))
        for seed in args.seeds:
            for mode in MODES:
                samples_by_synth: dict[str, object] = {}
                for variant in args.variants:
                    spec = VARIANTS[variant]
                    if mode not in spec.get("modes", MODES):
                        continue
                    synth_key = json.dumps(spec["synth"], sort_keys=True)
                    if synth_key not in samples_by_synth:
                        cfg = SynthesisConfig(method=mode, seed=seed, steps_per_round=args.steps,
                                              warmup_steps=min(100, args.steps // 5), **spec["synth"])
                        samples = synthesize(loaded.model, cfg, loaded.spec, device, source, progress=False)
                        samples_by_synth[synth_key] = samples
                        if samples.steps:
                            speeds[f"{mode} ({variant})" if spec["synth"] else mode].append(samples.steps_per_s)
                        if mode != "real":
                            entropies.setdefault(f"{mode} ({variant})" if spec["synth"] else mode, []).append(
                                entropy_per_block(loaded.model, samples.images))
                    samples = samples_by_synth[synth_key]
                    for w, a in SETTINGS:
                        for obs in OBSERVERS if (w, a) in LOW_BIT else ["minmax"]:
                            q = QuantConfig(w_bits=w, a_bits=a, act_observer=obs, **spec["quant"])
                            res = evaluate(quantized_copy(loaded.model, q, samples.images, device), batches, device,
                                           fp.predictions)
                            records.append(dict(model_seed=model_seed, seed=seed, calib=mode, variant=variant,
                                                w_bits=w, a_bits=a, observer=obs, column=f"W{w}A{a} {obs}",
                                                top1=res.top1, top5=res.top5, agreement=res.agreement,
                                                correct=pack_correct(res.correct.numpy()), count=res.count))
                print(f"model {model_seed} seed {seed} {mode:16s} done ({time.perf_counter() - started:.0f} s)", flush=True)
    return dict(records=records, fp32_top1=fp32_top1, steps_per_s=dict(speeds), entropy_per_block=entropies,
                wall_s=time.perf_counter() - started, models=args.models, seeds=args.seeds, steps=args.steps)


def paired(records: list[dict], variant: str, mode: str, column: str, base: str = "official", base_mode: str | None = None):
    """``variant``/``mode`` minus ``base``/``base_mode``, paired by (model, seed) and test image."""
    def runs(v, m):
        return {(r["model_seed"], r["seed"]): unpack_correct(r["correct"], r["count"])
                for r in records if r["variant"] == v and r["calib"] == m and r["column"] == column}

    a, b = runs(variant, mode), runs(base, base_mode or mode)
    keys = sorted(set(a) & set(b))
    return paired_difference(np.stack([a[k] for k in keys]), np.stack([b[k] for k in keys])) if keys else None


def render(result: dict) -> str:
    records = [r for r in result["records"] if r["variant"] == "official"]
    n = f"{len(result['models'])} models × {len(result['seeds'])} seeds"
    cols = [f"W{w}A{a} minmax" for w, a in SETTINGS]
    low_cols = [f"W{w}A{a} {o}" for w, a in SETTINGS if (w, a) in LOW_BIT for o in OBSERVERS[1:]]
    out = [f"#### digits-vit top-1 (%), official numerics, minmax ranges, mean ± std over {n}\n",
           accuracy_table(records, MODES, cols, fp32=result["fp32_top1"]),
           f"\n#### Low-bit columns with percentile (99.99) and MSE ranges, official numerics, {n}\n",
           accuracy_table(records, MODES, low_cols)]
    pairs = [("psaq", "gaussian"), ("psaq", "gaussian-clamped"), ("psaq", "psaq-noent"), ("psaq", "real")]
    rows = [[f"{a} − {b}"] + [str(paired(result["records"], "official", a, c, base_mode=b) or "–") for c in SUMMARY_COLUMNS]
            for a, b in pairs]
    out += [f"\n#### Paired differences between calibration modes, official numerics: top-1 points, 95 % interval "
            f"(bootstrap over runs and test images), {n}\n", markdown_table(["difference", *SUMMARY_COLUMNS], rows)]
    if BEFORE.is_file():
        before = json.loads(BEFORE.read_text())
        if same_models(result, before):
            out += ["\n#### What moved: official numerics minus the tables made before them (top-1 points, difference "
                    "of means; same models, seeds and test images)\n", moved_table(records, before, cols + low_cols)]
        else:  # a difference of means over other models would read as an effect of the numerics
            out += [f"\n(No 'what moved' table: the models differ from those of {BEFORE.name}, FP32 "
                    f"{', '.join(f'{v:.2f}' for v in result['fp32_top1'])} against "
                    f"{', '.join(f'{v:.2f}' for v in before['fp32_top1'])}.)"]
    variants = [v for v in VARIANTS if v != "official" and any(r["variant"] == v for r in result["records"])]
    if variants:
        rows = []
        for v in variants:
            for mode in VARIANTS[v].get("modes", MODES):
                cells = [paired(result["records"], v, mode, c) for c in SUMMARY_COLUMNS]
                rows.append([v, mode] + [str(c) if c else "–" for c in cells])
        out += [f"\n#### psaq's options minus the official default: paired top-1 difference (points) and 95 % interval "
                f"(bootstrap over runs and test images), {n}\n",
                markdown_table(["option", "calib", *SUMMARY_COLUMNS], rows)]
    out += ["\n#### Synthesis speed (this CPU, batch 32, 32×32)\n",
            markdown_table(["mode", "steps/s"], [[m, fmt_mean_std(v, 1)] for m, v in result["steps_per_s"].items() if v])]
    ent = result["entropy_per_block"]
    blocks = len(next(iter(ent.values()))[0])
    rows = [[name] + [f"{mean_std([r[b] for r in runs])[0]:.2f}" for b in range(blocks)] for name, runs in ent.items()]
    out += ["\n#### Patch-similarity entropy per block (official estimator; higher = more diverse), mean over runs\n",
            markdown_table(["images"] + [f"block {b}" for b in range(blocks)], rows)]
    return "\n".join(out)


def same_models(result: dict, before: dict) -> bool:
    """The earlier tables record no weights, only each model's FP32 top-1 on the same test images:
    different accuracies mean different models (equal ones do not prove the same)."""
    a, b = result["fp32_top1"], before["fp32_top1"]
    return len(a) == len(b) and all(abs(x - y) < 1e-9 for x, y in zip(a, b))


def moved_table(records: list[dict], before: dict, cols: list[str]) -> str:
    old = defaultdict(list)
    for r in before["records"]:
        old[(r["calib"], r["column"])].append(r["top1"])
    new = defaultdict(list)
    for r in records:
        new[(r["calib"], r["column"])].append(r["top1"])
    rows = []
    for mode in MODES:
        cells = []
        for c in cols:
            if new[(mode, c)] and old[(mode, c)]:
                cells.append(f"{mean_std(new[(mode, c)])[0] - mean_std(old[(mode, c)])[0]:+.1f}")
            else:
                cells.append("–")
        rows.append([mode] + cells)
    return markdown_table(["calib", *cols], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, nargs="+", default=[0, 1], help="training seeds of digits-vit")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthesis seeds")
    ap.add_argument("--steps", type=int, default=500, help="steps per round (2 rounds)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    add_output_args(ap)
    measure_and_write("digits_table", ap.parse_args(), run, render)

if __name__ == "__main__":
    main()
