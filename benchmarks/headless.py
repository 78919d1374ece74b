"""Data-free quantization of headless backbones: psaq's trained classifiers with their heads
removed, scored as a backbone's users score one.

    .venv/bin/python benchmarks/headless.py --cache-dir .                 # the README's table
    .venv/bin/python benchmarks/headless.py --models digits-vit --seeds 0 --quick

Each model is loaded with ``headless=True`` (its classifier removed). For each synthesis seed,
bit setting and quantizer recipe (``paper``: the official sites, min/max; ``repq``: psaq's 4-bit
recipe) the backbone is calibrated on the images of each way:

    gaussian       N(0, 1) noise
    psaq-head      v1's images, synthesized *with* the classifier (its labels), then the head removed:
                   what a user with the classifier could do; a headless user cannot
    psaq-nolabel   PSAQ images from the backbone alone (patch-similarity entropy and the label-free
                   priors, no labels): psaq-v2's starting images, calibrated, no rounds
    psaq-v2        the same, then V2's rounds with the feature discrepancy (``adaptive.discrepancy:
                   features``): the backbone's data-free path in psaq
    real           the training split's images

Scores: k-NN top-1 (20 neighbours, weighted vote, 10,000 training images as the index, each model
indexing with its own features) and the mean cosine per output token with the float backbone.
Prints an estimate before it starts; writes benchmarks/results/headless.{md,json} with mean ± std
over seeds and paired differences with 95 % bootstrap intervals (over seeds and test images).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import defaultdict

import numpy as np
import torch
from tables import add_output_args, load_given, measure_and_write, paired_runs  # benchmarks/tables.py

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT)
from psaq.evaluation import EvalConfig
from psaq.feature_evaluation import evaluate_features
from psaq.quant import QuantConfig, quantized_copy
from psaq.quant.adaptive import AdaptiveConfig, adapt
from psaq.report import fmt_mean_std, markdown_table
from psaq.setting import BitSetting
from psaq.sources import eval_loader, model_data, real_source
from psaq.stats import pack_correct, paired_difference
from psaq.synth import SynthesisConfig, synthesize

WAYS = ["gaussian", "psaq-head", "psaq-nolabel", "psaq-v2", "real"]
SETTINGS = ["W4A8", "W4A4"]
RECIPES = {"paper": dict(sites="official", act_observer="minmax"), "repq": dict(sites="repq", act_observer="minmax")}
PAIRS = [("psaq-v2", "gaussian"), ("psaq-nolabel", "gaussian"), ("psaq-head", "gaussian"), ("psaq-v2", "psaq-nolabel"),
         ("psaq-v2", "psaq-head"), ("psaq-nolabel", "psaq-head"), ("psaq-v2", "real"), ("real", "gaussian")]


def _timed(times, name, fn):
    t = time.perf_counter()
    out = fn()
    times[name].append(time.perf_counter() - t)
    return out


def _models(args, name, device):
    """(the classifier, the same weights headless): psaq's shipped or trained weights, or a checkpoint."""
    checkpoint = dict(item.split("=", 1) for item in args.checkpoint).get(name)
    return (load_given(args.cache_dir, name, checkpoint, device),
            load_given(args.cache_dir, name, checkpoint, device, headless=True))


def _score(q, backbone, data, cfg: EvalConfig, device, reference=None):
    return evaluate_features(q, eval_loader(data, cfg.batch_size), data.calib_set, device=device, reference=backbone,
                             reference_predictions=reference, k=cfg.knn_k, temperature=cfg.knn_temperature,
                             index_size=cfg.knn_index, batch_size=cfg.batch_size)


def estimate(args, headed, backbone, data, device) -> float:
    """Seconds for one model: a few timed steps of each part, multiplied out."""
    probe = SynthesisConfig(method="psaq", num_samples=32, steps_per_round=5, warmup_steps=1)
    t = time.perf_counter()
    images = synthesize(headed.model, probe, headed.spec, device, progress=False).images
    synth_step = (time.perf_counter() - t) / probe.total_steps
    q = quantized_copy(backbone.model, QuantConfig(w_bits=4, a_bits=4), images, device)
    t = time.perf_counter()
    adapt(q, backbone.model, images, probe, AdaptiveConfig(rounds=1, sample_steps=3, student_steps=3,
                                                           discrepancy="features"), backbone.spec, device, False)
    v2_step = (time.perf_counter() - t) / 6
    t = time.perf_counter()
    _score(q, backbone.model, data, EvalConfig(), device)
    eval_s = time.perf_counter() - t
    a = AdaptiveConfig(**args.adaptive)
    combos = len(args.settings) * len(args.recipes)
    per_seed = 2 * 2 * args.steps * synth_step + combos * (a.rounds * (a.sample_steps + a.student_steps) * v2_step
                                                           + len(WAYS) * eval_s)
    print(f"  {headed.name}: synthesis {synth_step * 1e3:.0f} ms/step, V2 {v2_step * 1e3:.0f} ms/step, "
          f"evaluation {eval_s:.1f} s → {per_seed:.0f} s per seed", flush=True)
    return per_seed * len(args.seeds)


def run(args) -> dict:
    device = torch.device("cpu")
    records, fp32, times, cosines = [], {}, defaultdict(list), {}
    adaptive = AdaptiveConfig(**{**args.adaptive, "discrepancy": "features"})
    models = {name: _models(args, name, device) for name in args.models}
    data = {name: model_data(b, None) for name, (_, b) in models.items()}
    print("estimate (measured here, before the run):", flush=True)
    total = sum(estimate(args, h, b, data[name], device) for name, (h, b) in models.items())
    print(f"  about {total / 60:.0f} min in all", flush=True)
    started = time.perf_counter()
    eval_cfg = EvalConfig()
    for name, (headed, backbone) in models.items():
        fp = _score(backbone.model, None, data[name], eval_cfg, device)
        fp32[name] = fp.top1
        source = real_source(data[name])
        for seed in args.seeds:
            def synth(model, spec, method):
                cfg = SynthesisConfig(method=method, seed=seed, steps_per_round=args.steps,
                                      warmup_steps=min(100, args.steps // 5))
                return cfg, _timed(times, f"synthesize {method}", lambda: synthesize(
                    model, cfg, spec, device, source, progress=False).images)

            images = {"gaussian": synth(backbone.model, backbone.spec, "gaussian")[1],
                      "psaq-head": synth(headed.model, headed.spec, "psaq")[1],
                      "real": synth(backbone.model, backbone.spec, "real")[1]}
            v2_cfg, images["psaq-nolabel"] = synth(backbone.model, backbone.spec, "psaq-v2")
            for setting in args.settings:
                parsed = BitSetting.parse(setting)
                for recipe in args.recipes:
                    qcfg = QuantConfig(w_bits=parsed.w_bits, a_bits=parsed.a_bits, **RECIPES[recipe])
                    quantized = {way: _timed(times, "calibrate", lambda way=way: quantized_copy(
                        backbone.model, qcfg, images["psaq-nolabel" if way == "psaq-v2" else way], device))
                        for way in WAYS}
                    _timed(times, "psaq-v2 rounds", lambda: adapt(
                        quantized["psaq-v2"], backbone.model, images["psaq-nolabel"], v2_cfg,
                        dataclasses.replace(adaptive, seed=seed), backbone.spec, device, progress=False))
                    line = []
                    for way, q in quantized.items():
                        res = _timed(times, "evaluate", lambda: _score(q, backbone.model, data[name], eval_cfg, device,
                                                                      fp.predictions))
                        records.append(dict(model=name, seed=seed, way=way, recipe=recipe, column=setting,
                                            top1=res.top1, cosine=res.cosine, agreement=res.agreement,
                                            correct=pack_correct(res.correct.numpy()), count=res.count))
                        cosines[(name, recipe, setting, way, seed)] = res.cosines.numpy()
                        line.append(f"{way} {res.top1:.2f}/{res.cosine:.4f}")
                    print(f"  {name} seed {seed} {setting} {recipe}: " + ", ".join(line)
                          + f" ({time.perf_counter() - started:.0f} s)", flush=True)
    return dict(records=records, fp32=fp32, stage_s=dict(times), wall_s=time.perf_counter() - started,
                estimate_s=total, models=args.models, seeds=args.seeds, steps=args.steps,
                adaptive=dataclasses.asdict(adaptive), knn=dict(k=eval_cfg.knn_k, index=eval_cfg.knn_index),
                cosine_pairs=cosine_pairs(cosines, args), threads=torch.get_num_threads())


def cosine_pairs(cosines: dict, args) -> list[dict]:
    """Paired differences of the per-image cosine, with the same bootstrap as top-1's."""
    out = []
    for name in args.models:
        for recipe in args.recipes:
            for setting in args.settings:
                for a, b in PAIRS:
                    pa = np.stack([cosines[(name, recipe, setting, a, s)] for s in args.seeds])
                    pb = np.stack([cosines[(name, recipe, setting, b, s)] for s in args.seeds])
                    d = paired_difference(pa / 100, pb / 100)  # its differences in cosine, not points
                    out.append(dict(model=name, recipe=recipe, column=setting, a=a, b=b, mean=d.mean, low=d.low,
                                    high=d.high))
    return out


def _cell(records, name, recipe, setting, way, field, digits):
    values = [r[field] for r in records if (r["model"], r["recipe"], r["column"], r["way"]) == (name, recipe, setting, way)]
    return fmt_mean_std(values, digits) if values else "–"


def render(result: dict) -> str:
    records = result["records"]
    settings = [s for s in SETTINGS if any(r["column"] == s for r in records)]
    recipes = [r for r in RECIPES if any(x["recipe"] == r for x in records)]
    n = f"{len(result['seeds'])} synthesis seeds"
    knn = result["knn"]
    out = []
    for name in result["models"]:
        cols = [f"{s} {rc}" for s in settings for rc in recipes]
        out += [f"#### {name} with its head removed: k-NN top-1 (%) and feature cosine, mean ± std over {n} "
                f"(FP32 backbone k-NN top-1 {result['fp32'][name]:.2f}; {knn['k']} neighbours, up to {knn['index']} training "
                f"images as the index (all of a smaller split); synthesis {result['steps']} steps × 2 rounds)\n",
                markdown_table(["calibration", *cols],
                               [[way, *(f"{_cell(records, name, rc, s, way, 'top1', 2)} · "
                                        f"{_cell(records, name, rc, s, way, 'cosine', 4)}"
                                        for s in settings for rc in recipes)] for way in WAYS]),
                f"\n#### {name}: paired differences, k-NN top-1 points · cosine, 95 % interval (bootstrap over seeds "
                "and test images)\n"]
        rows = []
        for a, b in PAIRS:
            row = [f"{a} − {b}"]
            for s in settings:
                for rc in recipes:
                    same = dict(model=name, recipe=rc, column=s)
                    top = paired_runs(records, lambda r: r["seed"], dict(same, way=a), dict(same, way=b))
                    found = [p for p in result["cosine_pairs"] if (p["model"], p["recipe"], p["column"], p["a"], p["b"])
                             == (name, rc, s, a, b)]  # a pair added after a run has its top-1 only
                    row.append(f"{top} · " + (f"{found[0]['mean']:+.4f} [{found[0]['low']:+.4f}, {found[0]['high']:+.4f}]"
                                              if found else "–"))
            rows.append(row)
        out += [markdown_table(["difference", *cols], rows), ""]
    out += [f"#### Time per part (s, this CPU, {result['threads']} thread(s); estimated beforehand "
            f"{result['estimate_s'] / 60:.0f} min, took {result['wall_s'] / 60:.0f} min)\n",
            markdown_table(["part", "seconds"], [[k, fmt_mean_std(v, 1)] for k, v in result["stage_s"].items()])]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["fashion-vit"],
                    help="psaq's trained models (fashion-swin needs --checkpoint or trains first)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthesis seeds")
    ap.add_argument("--steps", type=int, default=200, help="synthesis steps per round (2 rounds)")
    ap.add_argument("--settings", nargs="+", default=SETTINGS, choices=SETTINGS)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=FILE",
                    help="weights of a model to use as they are (e.g. the ones an earlier run trained)")
    ap.add_argument("--quick", action="store_true", help="50 steps, 2 V2 rounds")
    add_output_args(ap)
    args = ap.parse_args()
    args.adaptive = {"rounds": 2} if args.quick else {}
    if args.quick:
        args.steps = 50
    measure_and_write("headless", args, run, render)


if __name__ == "__main__":
    main()
