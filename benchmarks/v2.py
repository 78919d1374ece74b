"""PSAQ-ViT V2 against v1, v1 + block reconstruction and real images, on psaq's trained models.

    .venv/bin/python benchmarks/v2.py --cache-dir .                          # the README's table
    .venv/bin/python benchmarks/v2.py --models digits-vit --seeds 0 --quick  # a look in a few minutes

For each model, synthesis seed, bit setting and quantizer recipe (``paper``: the official sites
with min/max ranges; ``repq``: psaq's 4-bit recipe), the ways to get the quantized model that
``--ways`` names (its default separates V2's effects):

    psaq          v1: PSAQ-ViT images, calibrate (the faithful default)
    psaq+recon    v1, then block reconstruction (AdaRound + LSQ + QDrop) on the same images
    psaq+lsq      v1, then V2's student step on v1's fixed images, activation scales only (LSQ alone)
    psaq+student  v1, then V2's student step on v1's fixed images, weights and scales (no co-evolution)
    psaq-v2-w     label-free PSAQ images, calibrate, V2's rounds with a weights-only student
    psaq-v2       label-free PSAQ images, calibrate, V2's rounds (weights and scales: psaq's default)
    real          the training split's images, calibrate

psaq-v2 − psaq+student is what the samples' co-evolution adds over training the same student on
fixed images (it also holds the change from labelled to label-free starting images); psaq+lsq −
psaq is the learned activation scales alone.

Prints an estimate before it starts (from timed steps of each part on this machine), then top-1
mean ± std over models' seeds, paired differences with 95 % bootstrap intervals (over runs and
test images), V2's two checks per run (the student's KL on held-out samples and on the noise probe,
and the round it kept; ``--before`` an earlier v2.json puts that run's top-1 beside each), and the
wall time of each part. Writes benchmarks/results/v2.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from tables import add_output_args, measure_and_write, paired_runs  # benchmarks/tables.py

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT)
from psaq.evaluation import evaluate
from psaq.models import ModelConfig
from psaq.quant import QuantConfig, quantized_copy
from psaq.quant.adaptive import AdaptiveConfig, adapt
from psaq.quant.reconstruct import ReconstructConfig, reconstruct
from psaq.report import accuracy_table, fmt_mean_std, markdown_table
from psaq.setting import BitSetting
from psaq.sources import eval_loader, model_data, real_source
from psaq.stages import model as model_stage
from psaq.stats import pack_correct
from psaq.synth import SynthesisConfig, synthesize

WAYS = ["psaq", "psaq+recon", "psaq+lsq", "psaq+student", "psaq-v2-w", "psaq-v2", "real"]
DEFAULT_WAYS = ["psaq", "psaq+lsq", "psaq+student", "psaq-v2-w", "psaq-v2", "real"]
# way → (which images, the student's parts, whether the samples co-evolve)
STUDENTS = {"psaq+lsq": ("psaq", "scales", False), "psaq+student": ("psaq", "weights+scales", False),
            "psaq-v2-w": ("psaq-v2", "weights", True), "psaq-v2": ("psaq-v2", "weights+scales", True)}
SETTINGS = ["W4A8", "W4A4"]
RECIPES = {"paper": dict(sites="official", act_observer="minmax"), "repq": dict(sites="repq", act_observer="minmax")}
PAIRS = [("psaq-v2", "psaq"), ("psaq-v2", "psaq+student"), ("psaq+student", "psaq"), ("psaq+lsq", "psaq"),
         ("psaq-v2", "psaq-v2-w"), ("psaq-v2-w", "psaq"), ("psaq-v2", "psaq+recon"), ("psaq-v2", "real"),
         ("psaq+recon", "psaq")]


def _timed(times, name, fn):
    t = time.perf_counter()
    out = fn()
    times[name].append(time.perf_counter() - t)
    return out


def estimate(args, loaded, source, device) -> float:
    """Seconds for one model: a few timed steps of each part, multiplied out."""
    spec, model = loaded.spec, loaded.model
    probe = SynthesisConfig(method="psaq", num_samples=32, steps_per_round=5, warmup_steps=1)
    t = time.perf_counter()
    images = synthesize(model, probe, spec, device, source, progress=False).images
    synth_step = (time.perf_counter() - t) / probe.total_steps
    q = quantized_copy(model, QuantConfig(w_bits=4, a_bits=4), images, device)
    t = time.perf_counter()
    adapt(q, model, images, probe, AdaptiveConfig(rounds=1, sample_steps=3, student_steps=3), spec, device, False)
    v2_step = (time.perf_counter() - t) / 6
    q = quantized_copy(model, QuantConfig(w_bits=4, a_bits=4, sites="repq"), images, device)
    t = time.perf_counter()
    reconstruct(q, copy.deepcopy(model), images, ReconstructConfig(enabled=True, iters=3), device, progress=False)
    recon_iter = (time.perf_counter() - t) / 3  # all blocks, one iteration each
    t = time.perf_counter()
    batches = eval_loader(model_data(loaded, None))
    evaluate(q, batches, device)
    eval_s = time.perf_counter() - t
    a = AdaptiveConfig(**args.adaptive)
    combos = len(args.settings) * len(args.recipes)
    loop_steps = sum(a.rounds * ((a.sample_steps if STUDENTS[w][2] else 0) + a.student_steps)
                     for w in args.ways if w in STUDENTS)
    per_seed = (3 * 2 * args.steps * synth_step
                + combos * (loop_steps * v2_step + ("psaq+recon" in args.ways) * args.iters * recon_iter
                            + len(args.ways) * eval_s))
    print(f"  {loaded.name}: synthesis {synth_step * 1e3:.0f} ms/step, V2 {v2_step * 1e3:.0f} ms/step, "
          f"reconstruction {recon_iter * 1e3:.0f} ms/iteration, evaluation {eval_s:.1f} s → "
          f"{per_seed:.0f} s per seed", flush=True)
    return per_seed * len(args.seeds)


def run(args) -> dict:
    device = torch.device("cpu")
    records, fp32, times = [], {}, defaultdict(list)
    adaptive = AdaptiveConfig(**args.adaptive)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    loaded_models = {name: model_stage.load(args.cache_dir, ModelConfig(name, checkpoint=checkpoints.get(name)), device)
                     for name in args.models}
    total = 0.0
    print("estimate (measured here, before the run):", flush=True)
    for name, loaded in loaded_models.items():
        total += estimate(args, loaded, real_source(model_data(loaded, None)), device)
    print(f"  about {total / 60:.0f} min in all", flush=True)
    started = time.perf_counter()
    for name, loaded in loaded_models.items():
        data = model_data(loaded, None)
        batches, source = eval_loader(data), real_source(data)
        fp = evaluate(loaded.model, batches, device)
        fp32[name] = fp.top1
        for seed in args.seeds:
            def synth(method):
                cfg = SynthesisConfig(method=method, seed=seed, steps_per_round=args.steps,
                                      warmup_steps=min(100, args.steps // 5))
                return cfg, _timed(times, f"synthesize {method}", lambda: synthesize(
                    loaded.model, cfg, loaded.spec, device, source, progress=False).images)

            (_, v1), (v2_cfg, v2_init) = synth("psaq"), synth("psaq-v2")
            real = synth("real")[1] if "real" in args.ways else None
            for setting in args.settings:
                parsed = BitSetting.parse(setting)
                w, a = parsed.w_bits, parsed.a_bits
                for recipe in args.recipes:
                    qcfg = QuantConfig(w_bits=w, a_bits=a, **RECIPES[recipe])
                    models, checks = {}, {}
                    images = {"psaq": v1, "psaq-v2": v2_init}
                    models["psaq"] = _timed(times, "calibrate", lambda: quantized_copy(loaded.model, qcfg, v1, device))
                    if "psaq+recon" in args.ways:
                        models["psaq+recon"] = copy.deepcopy(models["psaq"])
                        _timed(times, "reconstruct", lambda: reconstruct(
                            models["psaq+recon"], copy.deepcopy(loaded.model), v1,
                            ReconstructConfig(enabled=True, iters=args.iters, seed=seed), device, progress=False))
                    for way, (start, parts, co_evolve) in STUDENTS.items():
                        if way not in args.ways:
                            continue
                        models[way] = quantized_copy(loaded.model, qcfg, images[start], device)
                        cfg = AdaptiveConfig(**{**args.adaptive, "seed": seed, "student": parts,
                                                **({} if co_evolve else {"sample_steps": 0})})
                        _, rounds = _timed(times, f"{way} rounds", lambda: adapt(
                            models[way], loaded.model, images[start], v2_cfg, cfg, loaded.spec, device, False))
                        # what the checks saw, per round; adapt warns exactly when it keeps an earlier round
                        checks[way] = dict(heldout=rounds["discrepancy_heldout"], noise=rounds["discrepancy_noise"],
                                           kept_round=rounds["kept_round"][0], rounds=cfg.rounds,
                                           warned=rounds["kept_round"][0] != cfg.rounds)
                    if "real" in args.ways:
                        models["real"] = quantized_copy(loaded.model, qcfg, real, device)
                    models = {w: models[w] for w in args.ways}
                    for way, q in models.items():
                        res = _timed(times, "evaluate", lambda: evaluate(q, batches, device, fp.predictions))
                        records.append(dict(model=name, seed=seed, way=way, recipe=recipe, column=setting,
                                            top1=res.top1, correct=pack_correct(res.correct.numpy()), count=res.count,
                                            **({"checks": checks[way]} if way in checks else {})))
                    print(f"  {name} seed {seed} {setting} {recipe}: "
                          + ", ".join(f"{r['way']} {r['top1']:.2f}" + (
                              f" (kept round {r['checks']['kept_round']}, warned)" if r.get("checks", {}).get("warned")
                              else "") for r in records[-len(models):])
                          + f" ({time.perf_counter() - started:.0f} s)", flush=True)
    return dict(records=records, fp32=fp32, stage_s=dict(times), wall_s=time.perf_counter() - started,
                estimate_s=total, models=args.models, seeds=args.seeds, steps=args.steps, iters=args.iters, ways=args.ways,
                adaptive=dataclasses.asdict(adaptive),
                threads=torch.get_num_threads())


def paired(records, model, recipe, a, b, column):
    same = dict(model=model, recipe=recipe, column=column)
    return paired_runs(records, lambda r: r["seed"], dict(same, way=a), dict(same, way=b))


def checks_table(records: list[dict], before: dict | None) -> str:
    """Per run of V2's loop: what its two checks saw, the round it kept, and its top-1 (with the
    top-1 of the same run in ``before``, an earlier result, where it holds one)."""
    earlier = {(r["model"], r["seed"], r["way"], r["recipe"], r["column"]): r["top1"]
               for r in (before or {}).get("records", [])}
    then = f"top-1 in the earlier run ({before['threads']} thread(s))" if before else "top-1 in an earlier run"
    rows = []
    for r in (r for r in records if "checks" in r):
        c = r["checks"]
        held = f"{c['heldout'][0]:.4f} → {c['heldout'][-1]:.4f}" if c["heldout"] else "–"
        noise = f"{c['noise'][0]:.4f} → {c['noise'][-1]:.4f}" if c["noise"] else "–"
        old = earlier.get((r["model"], r["seed"], r["way"], r["recipe"], r["column"]))
        rows.append([r["model"], r["way"], f"{r['column']} {r['recipe']}", str(r["seed"]), held, noise,
                     f"{c['kept_round']} of {c['rounds']}" + (" (warned)" if c["warned"] else ""),
                     "–" if old is None else f"{old:.2f}", f"{r['top1']:.2f}"])
    return markdown_table(["model", "way", "setting", "seed", "held-out KL (start → last round)",
                           "noise KL (start → last round)", "kept round", then, "top-1"], rows)


def render(result: dict, before: dict | None = None) -> str:
    records = result["records"]
    settings = [s for s in SETTINGS if any(r["column"] == s for r in records)]
    recipes = [r for r in RECIPES if any(x["recipe"] == r for x in records)]
    n = f"{len(result['seeds'])} synthesis seeds"
    out = []
    for model in result["models"]:
        rows = [dict(r, calib=f"{r['way']} · {r['recipe']}") for r in records if r["model"] == model]
        ways = result.get("ways", ["psaq", "psaq+recon", "psaq-v2", "real"])  # results written before --ways
        order = [f"{w} · {rc}" for rc in recipes for w in ways]
        out += [f"#### {model} top-1 (%), mean ± std over {n} (synthesis {result['steps']} steps × 2 rounds, "
                f"reconstruction {result['iters']} iterations per block, V2 {result['adaptive']})\n",
                accuracy_table(rows, order, settings, fp32=[result["fp32"][model]]),
                f"\n#### {model}: paired differences, top-1 points, 95 % interval (bootstrap over seeds and test images)\n"]
        table = [[f"{a} − {b} · {rc}"] + [str(paired(records, model, rc, a, b, c) or "–") for c in settings]
                 for rc in recipes for a, b in PAIRS if a in ways and b in ways]
        out += [markdown_table(["difference", *settings], table), ""]
    if any("checks" in r for r in records):
        out += ["#### V2's checks per run: the student's KL from the teacher on held-out samples and on the noise "
                "probe, before the first round and after the last, and the round kept\n",
                checks_table(records, before), ""]
    out += [f"#### Time per part (s, this CPU, {result['threads']} thread(s); per bit setting and recipe except "
            f"synthesis; estimated beforehand {result['estimate_s'] / 60:.0f} min, took {result['wall_s'] / 60:.0f} min)\n",
            markdown_table(["part", "seconds"], [[k, fmt_mean_std(v, 1)] for k, v in result["stage_s"].items()])]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["digits-vit", "fashion-vit"],
                    help="psaq's trained models (fashion-swin too, where time allows)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthesis seeds")
    ap.add_argument("--steps", type=int, default=200, help="synthesis steps per round (2 rounds)")
    ap.add_argument("--iters", type=int, default=100, help="reconstruction iterations per block")
    ap.add_argument("--settings", nargs="+", default=SETTINGS, choices=SETTINGS)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--ways", nargs="+", default=DEFAULT_WAYS, choices=WAYS,
                    help="the ways to compare (default: V2's effects apart; add psaq+recon for block reconstruction)")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=FILE",
                    help="weights of a model to use as they are (e.g. the ones an earlier run trained)")
    ap.add_argument("--quick", action="store_true", help="50 steps, 20 iterations, 2 V2 rounds")
    ap.add_argument("--v2", action="append", default=[], metavar="KEY=VALUE",
                    help="an adaptive: setting for every way that runs V2's loop (e.g. holdout=0)")
    ap.add_argument("--unclipped-ste", action="store_true",
                    help="straight-through gradients pass where the forward clips too (psaq's V2 before the fix)")
    ap.add_argument("--before", metavar="JSON",
                    help="an earlier run's v2.json: its top-1 per run goes beside this run's in the checks table "
                         "(the same seed on another thread count can differ by points: float sums reorder)")
    add_output_args(ap)
    args = ap.parse_args()
    args.adaptive = {}
    if args.quick:
        args.steps, args.iters, args.adaptive = 50, 20, {"rounds": 2}
    for item in args.v2:
        key, value = item.split("=", 1)
        args.adaptive[key] = yaml.safe_load(value)
    if args.unclipped_ste:
        from psaq.quant.quantizers import ActQuantizer

        ActQuantizer.clip_straight_through = False
    before = json.loads(Path(args.before).read_text()) if args.before else None
    measure_and_write("v2", args, run, lambda result: render(result, before))


if __name__ == "__main__":
    main()
