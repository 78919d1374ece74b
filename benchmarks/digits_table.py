"""The embedded benchmark: calibration modes × bit settings on digits-vit, mean ± std over seeds.

    .venv/bin/python benchmarks/digits_table.py                # 2 trained models × 3 synthesis seeds
    .venv/bin/python benchmarks/digits_table.py --models 0 --seeds 0   # a quick look

Prints (and writes to benchmarks/results/): the accuracy table, synthesis steps/s, and the
patch-similarity entropy per block of real, noise and synthesized images.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from psaq.data import digits_split, first_images
from psaq.evaluate import evaluate
from psaq.models import ModelConfig, load_model
from psaq.quant import QuantConfig
from psaq.report import accuracy_table, fmt_mean_std, markdown_table, mean_std
from psaq.synth import SynthesisConfig, synthesize
from psaq.synth.analysis import entropy_per_block
from psaq.workflow import eval_loader, quantized_copy, real_source

MODES = ["real", "psaq", "psaq-noent", "gaussian", "gaussian-clamped"]
SETTINGS = [(8, 8), (4, 8), (6, 6), (8, 5), (8, 4), (4, 4)]
LOW_BIT = {(6, 6), (8, 5), (8, 4), (4, 4)}  # activations ≤ 6 bits: also run the better range rules
OBSERVERS = ["minmax", "percentile", "mse"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, nargs="+", default=[0, 1], help="training seeds of digits-vit")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthesis seeds")
    ap.add_argument("--steps", type=int, default=500, help="steps per round (2 rounds)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--cache-dir", default=".psaq-cache")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = torch.device("cpu")
    records, fp32_top1, speeds, entropies = [], [], {"psaq": [], "psaq-noent": []}, {}
    started = time.perf_counter()
    for model_seed in args.models:
        loaded = load_model(ModelConfig("digits-vit", train_seed=model_seed), args.cache_dir, device)
        data = eval_loader(loaded, "digits")
        fp = evaluate(loaded.model, data, device)
        fp32_top1.append(fp.top1)
        source = real_source(loaded, "digits")
        ent_real = entropy_per_block(loaded.model, first_images(digits_split("test"), 32, 0)[0])
        entropies.setdefault("real (test)", []).append(ent_real)
        for seed in args.seeds:
            for mode in MODES:
                cfg = SynthesisConfig(method=mode, seed=seed, steps_per_round=args.steps,
                                      warmup_steps=min(100, args.steps // 5))
                samples = synthesize(loaded.model, cfg, loaded.spec, device, source, progress=False)
                if samples.steps:
                    speeds[mode].append(samples.steps_per_s)
                if mode != "real":
                    entropies.setdefault(mode, []).append(entropy_per_block(loaded.model, samples.images))
                for w, a in SETTINGS:
                    for obs in OBSERVERS if (w, a) in LOW_BIT else ["minmax"]:
                        q = QuantConfig(w_bits=w, a_bits=a, act_observer=obs)
                        qmodel = quantized_copy(loaded.model, q, samples.images, device)
                        res = evaluate(qmodel, data, device, fp.predictions)
                        records.append(dict(model_seed=model_seed, seed=seed, calib=mode, w_bits=w, a_bits=a,
                                            observer=obs, column=f"W{w}A{a} {obs}", top1=res.top1,
                                            top5=res.top5, agreement=res.agreement))
                print(f"model {model_seed} seed {seed} {mode:16s} done ({time.perf_counter() - started:.0f} s)", flush=True)

    cols = [f"W{w}A{a} minmax" for w, a in SETTINGS]
    low_cols = [f"W{w}A{a} {o}" for w, a in SETTINGS if (w, a) in LOW_BIT for o in OBSERVERS[1:]]
    n = f"{len(args.models)} models × {len(args.seeds)} seeds"
    out = [f"## digits-vit top-1 (%), minmax ranges, mean ± std over {n}\n",
           accuracy_table(records, MODES, cols, fp32=fp32_top1),
           f"\n## Low-bit columns with percentile (99.99) and MSE ranges, {n}\n",
           accuracy_table(records, MODES, low_cols),
           "\n## Synthesis speed (this CPU, batch 32, 32×32)\n",
           markdown_table(["mode", "steps/s"], [[m, fmt_mean_std(v, 1)] for m, v in speeds.items() if v])]
    blocks = len(next(iter(entropies.values()))[0])
    rows = []
    for name, runs in entropies.items():
        per_block = [mean_std([r[b] for r in runs]) for b in range(blocks)]
        rows.append([name] + [f"{m:.2f}" for m, _ in per_block])
    out += ["\n## Patch-similarity entropy per block (higher = more diverse), mean over runs\n",
            markdown_table(["images"] + [f"block {b}" for b in range(blocks)], rows)]
    text = "\n".join(out)
    print(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "digits_table.md").write_text(text + "\n")
    Path(args.out, "digits_table.json").write_text(json.dumps(
        dict(records=records, fp32_top1=fp32_top1, steps_per_s=speeds, entropy_per_block=entropies,
             wall_s=time.perf_counter() - started), indent=1))
    print(f"\nwritten to {args.out}/digits_table.md and .json in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
