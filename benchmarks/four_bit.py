"""Beyond the paper at 4 bits, on digits-vit: calibration images × quantizer recipe × bit setting.

    .venv/bin/python benchmarks/four_bit.py --iters 100 --recon-settings W4A4   # the README's table (~1 h)
    .venv/bin/python benchmarks/four_bit.py --seeds 0 --iters 50   # a quick look

Recipes (each adds to the one before it):
    paper        the official site set, min/max ranges per tensor (the paper's quantizers)
    paper-mse    the same sites with MSE-searched ranges (psaq's better range rule)
    repq         site set ``repq``: log2 post-softmax probabilities, the LayerNorm outputs
                 calibrated per channel and folded into the LayerNorm affine and the next linear,
                 min/max ranges at the matmul inputs
    repq+recon   ``repq`` followed by block reconstruction (AdaRound + LSQ + QDrop) on the same
                 calibration images

Calibration images: psaq (the faithful default), real (the training split), gaussian.
Prints and writes to benchmarks/results/four_bit.{md,json}: top-1 mean ± std over seeds, paired
differences with 95 % bootstrap intervals (over runs and test images), and the time each stage took.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import defaultdict

import torch
from tables import add_output_args, digits_model, measure_and_write, paired_runs  # benchmarks/tables.py

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT)
from psaq.evaluation import evaluate
from psaq.quant import QuantConfig, quantized_copy
from psaq.quant.reconstruct import ReconstructConfig, reconstruct
from psaq.report import accuracy_table, fmt_mean_std, markdown_table
from psaq.stats import pack_correct
from psaq.synth import SynthesisConfig, synthesize

MODES = ["psaq", "real", "gaussian"]
SETTINGS = ["W4A4", "W4A8", "W6A6"]
RECIPES = {
    "paper": dict(sites="official", act_observer="minmax"),
    "paper-mse": dict(sites="official", act_observer="mse"),
    "repq": dict(sites="repq", act_observer="minmax"),
    "repq+recon": dict(sites="repq", act_observer="minmax"),
}
PAIRS = [  # (mode, recipe) minus (mode, recipe): the comparisons the README draws
    (("psaq", "repq"), ("psaq", "paper")),
    (("psaq", "repq+recon"), ("psaq", "repq")),
    (("psaq", "repq+recon"), ("real", "paper")),
    (("psaq", "repq"), ("real", "paper")),
    (("psaq", "repq"), ("gaussian", "repq")),
    (("psaq", "repq"), ("real", "repq")),
    (("psaq", "repq+recon"), ("gaussian", "repq+recon")),
]


def bits(setting: str) -> tuple[int, int]:
    w, a = setting[1:].split("A")
    return int(w), int(a)


def run(args) -> dict:
    device = torch.device("cpu")
    records, fp32_top1, times = [], [], defaultdict(list)
    started = time.perf_counter()
    for model_seed in args.models:
        m = digits_model(model_seed, args.cache_dir, device)
        loaded, batches, fp, source = m.loaded, m.batches, m.fp32, m.source
        fp32_top1.append(fp.top1)
        for seed in args.seeds:
            for mode in MODES:
                t = time.perf_counter()
                cfg = SynthesisConfig(method=mode, seed=seed, steps_per_round=args.steps,
                                      warmup_steps=min(100, args.steps // 5))
                images = synthesize(loaded.model, cfg, loaded.spec, device, source, progress=False).images
                times[f"synthesize {mode}"].append(time.perf_counter() - t)
                print(f"  {mode} seed {seed} synthesized in {times[f'synthesize {mode}'][-1]:.0f} s", flush=True)
                for setting in args.settings:
                    w, a = bits(setting)
                    for recipe in args.recipes:
                        t = time.perf_counter()
                        q = quantized_copy(loaded.model, QuantConfig(w_bits=w, a_bits=a, **RECIPES[recipe]), images, device)
                        times["calibrate"].append(time.perf_counter() - t)
                        if recipe.endswith("+recon") and setting in args.recon_settings:
                            t = time.perf_counter()
                            reconstruct(q, copy.deepcopy(loaded.model), images,
                                        ReconstructConfig(enabled=True, iters=args.iters, seed=seed), device, progress=False)
                            times["reconstruct"].append(time.perf_counter() - t)
                            print(f"  {mode} seed {seed} {setting} reconstructed in {times['reconstruct'][-1]:.0f} s",
                                  flush=True)
                        elif recipe.endswith("+recon"):
                            continue
                        t = time.perf_counter()
                        res = evaluate(q, batches, device, fp.predictions)
                        times["evaluate"].append(time.perf_counter() - t)
                        records.append(dict(model_seed=model_seed, seed=seed, calib=mode, recipe=recipe, column=setting,
                                            top1=res.top1, correct=pack_correct(res.correct.numpy()), count=res.count))
                print(f"model {model_seed} seed {seed} {mode:9s} done ({time.perf_counter() - started:.0f} s)", flush=True)
    return dict(records=records, fp32_top1=fp32_top1, stage_s=dict(times), wall_s=time.perf_counter() - started,
                models=args.models, seeds=args.seeds, steps=args.steps, iters=args.iters, threads=torch.get_num_threads())


def paired(records: list[dict], a: tuple[str, str], b: tuple[str, str], column: str):
    return paired_runs(records, lambda r: (r["model_seed"], r["seed"]), dict(calib=a[0], recipe=a[1], column=column),
                       dict(calib=b[0], recipe=b[1], column=column))


def render(result: dict) -> str:
    records = result["records"]
    settings = [s for s in SETTINGS if any(r["column"] == s for r in records)]
    recipes = [r for r in RECIPES if any(x["recipe"] == r for x in records)]
    n = f"{len(result['models'])} model(s) × {len(result['seeds'])} synthesis seeds"
    rows_by = [dict(r, calib=f"{r['calib']} · {r['recipe']}") for r in records]
    order = [f"{m} · {rc}" for rc in recipes for m in MODES]
    out = [f"#### digits-vit top-1 (%) at low bits, mean ± std over {n} "
           f"(synthesis {result['steps']} steps × 2 rounds, reconstruction {result['iters']} iterations per block)\n",
           accuracy_table(rows_by, order, settings, fp32=result["fp32_top1"]),
           f"\n#### Paired differences, top-1 points, 95 % interval (bootstrap over runs and test images), {n}\n"]
    rows = [[f"{a[0]} · {a[1]} − {b[0]} · {b[1]}"] + [str(paired(records, a, b, c) or "–") for c in settings]
            for a, b in PAIRS]
    out.append(markdown_table(["difference", *settings], rows))
    out += [f"\n#### Time per stage (s, this CPU, {result['threads']} thread(s); calibrate and evaluate per bit setting "
            "and recipe)\n",
            markdown_table(["stage", "seconds"], [[k, fmt_mean_std(v, 1)] for k, v in result["stage_s"].items()])]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, nargs="+", default=[0], help="training seeds of digits-vit")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthesis seeds")
    ap.add_argument("--steps", type=int, default=500, help="synthesis steps per round (2 rounds)")
    ap.add_argument("--iters", type=int, default=100, help="reconstruction iterations per block")
    ap.add_argument("--settings", nargs="+", default=SETTINGS, choices=SETTINGS)
    ap.add_argument("--recon-settings", nargs="+", default=["W4A4"], choices=SETTINGS,
                    help="the bit settings that get the repq+recon recipe (it costs minutes per run on a CPU)")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    add_output_args(ap)
    measure_and_write("four_bit", ap.parse_args(), run, render)

if __name__ == "__main__":
    main()
