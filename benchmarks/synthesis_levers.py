"""Synthesis speed: a straightforward PSAQ-ViT implementation (kept here only) against psaq,
lever by lever, on the same model, device, batch and seed, in one process, in turns.

    .venv/bin/python benchmarks/synthesis_levers.py                  # digits-vit + DeiT-Tiny at 224, CPU
    python3 benchmarks/synthesis_levers.py --device cuda --models deit_tiny deit_base swin_tiny --skip-quality

The step of psaq's faithful default against the model's own forward + backward, evaluation
speed, contention and the official code side by side are in ``synthesis_speed.py``.

The baseline: fp32; timm's explicit attention path hooked at softmax(qkᵀ)·v; per-block and
per-image Python loops over the KDE; cosine similarity by broadcasting a (B, N, N, d) tensor,
as the official code does; 10-point grid; 2 × 500 steps. The first rows switch one thing at a
time in that loop; the rows marked "library" run ``psaq.synth.synthesize`` itself with its
speed options. Every lever is warmed up (compilation, allocator) before it is timed, and the
levers take turns ``--repeats`` times, so drift on a shared machine hits them all alike; the
table gives the median and the spread of those repeats.

Also printed: where a DeiT step's time goes (model, similarity, KDE), and the quality each
implementation's samples give after calibration at W4A8 and W8A8 on digits-vit (3 seeds), and
at W8A4 with MSE ranges, the setting where the calibration images matter most on this model,
including shorter schedules and a plateau stopping rule.
Writes benchmarks/results/synthesis_levers{,_<device>}.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import timm
import torch
import torch._dynamo
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT)
from psaq.data import InputSpec
from psaq.evaluation import evaluate
from psaq.models import ModelConfig
from psaq.stages import model as model_stage
from psaq.quant import QuantConfig
from psaq.report import fmt_mean_std, markdown_table
from psaq.synth import SynthesisConfig, synthesize
from psaq.synth.entropy import block_entropies
from psaq.synth.hooks import AttentionOutputHooks
from psaq.synth.kde import kde_entropy
from psaq.synth.priors import jitter_and_flip, scaled_jitter, total_variation, tv_target_scale, warmup_cosine_lr
from psaq.synth.similarity import mean_over_heads, pairwise_similarities
from psaq.quant import quantized_copy
from psaq.sources import eval_loader, model_data


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def naive_block_entropy(tokens: torch.Tensor, heads: int, prefix: int, broadcast: bool) -> torch.Tensor:
    """One block, one image at a time."""
    B, N, C = tokens.shape
    t = tokens.reshape(B, N, heads, C // heads).mean(2)[:, prefix:]
    n = t.shape[1]
    i, j = torch.triu_indices(n, n, 1, device=t.device)
    ents = []
    for b in range(B):
        if broadcast:
            sim = F.cosine_similarity(t[b][:, None, :], t[b][None, :, :], dim=-1, eps=1e-8)
        else:
            u = F.normalize(t[b], dim=-1, eps=1e-8)
            sim = u @ u.T
        ents.append(kde_entropy(sim[i, j][None])[0])
    return torch.stack(ents).mean()


def loop(model, spec: InputSpec, cfg: SynthesisConfig, device, *, fused: bool, broadcast: bool, batched: bool,
         channels_last: bool = False, stop_window: int = 0, stop_tol: float = 0.0) -> dict:
    """The PSAQ loop with each lever switchable; the library's own loop is psaq.synth.optimize.

    ``stop_window``: end a round once the mean loss of the last window improved by less than
    ``stop_tol`` (relative) on the window before it (checked after the warm-up).
    """
    model = copy.deepcopy(model).to(device).eval()
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn((cfg.num_samples, *spec.input_size), generator=g).to(device)
    labels = torch.randint(0, spec.num_classes, (cfg.num_samples,), generator=g).to(device)
    v = (2500 + 500 * float(torch.rand(1, generator=g))) * tv_target_scale(x.shape)
    lo, hi = spec.pixel_bounds(device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    done, started, ent = 0, None, float("nan")
    with AttentionOutputHooks(model) as hooks:
        for r in range(cfg.rounds):
            opt = torch.optim.Adam([x], lr=0.2, betas=cfg.betas, eps=cfg.adam_eps)
            shift = scaled_jitter(cfg.jitter[r], spec.input_size[-1])
            losses: list[float] = []
            for s in range(cfg.steps_per_round):
                if done == 1:
                    sync(device)
                    started = time.perf_counter()  # the first step (allocator warm-up) is not timed
                for group in opt.param_groups:
                    group["lr"] = warmup_cosine_lr(s, cfg.steps_per_round, cfg.warmup_steps, 0.2)
                xa = jitter_and_flip(x, shift, cfg.flip_prob, g)
                logits = model(xa)
                captured = hooks.take()
                if batched:
                    # the estimator these loop levers were measured with (psaq's unique-pairs variant)
                    entropy = block_entropies(captured, x.shape[0], prefix, "unique-pairs").sum()
                else:
                    entropy = sum(naive_block_entropy(c.output, c.num_heads, prefix, broadcast) for c in captured)
                loss = -entropy + F.cross_entropy(logits, labels) + 0.05 * (total_variation(xa) - v).abs()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.copy_(torch.maximum(torch.minimum(x, hi), lo))
                ent = float(entropy.detach())
                done += 1
                if stop_window:
                    losses.append(float(loss.detach()))
                    since = s + 1 - cfg.warmup_steps
                    if since >= 2 * stop_window and since % stop_window == 0:
                        prev = statistics.fmean(losses[-2 * stop_window:-stop_window])
                        cur = statistics.fmean(losses[-stop_window:])
                        if (prev - cur) / abs(prev) < stop_tol:
                            break
    sync(device)
    wall = time.perf_counter() - started if started else float("nan")
    return {"steps_per_s": (done - 1) / wall if done > 1 else float("nan"), "entropy": ent, "steps": done,
            "images": x.detach().float().contiguous().cpu()}


def library(model, spec: InputSpec, device, steps: int, num_samples: int = 32, **options) -> dict:
    """``synthesize`` with speed options: one short warm-up run (compilation), then ``steps`` timed."""
    def cfg(n: int) -> SynthesisConfig:
        # the same schedule as the loop rows: one warm-up step, then the full rate
        return SynthesisConfig(num_samples=num_samples, rounds=1, steps_per_round=n + 1, warmup_steps=1,
                               jitter_px=(15,), **options)

    synthesize(model, cfg(1), spec, device, progress=False)
    res = synthesize(model, cfg(steps), spec, device, progress=False)
    return {"steps_per_s": res.steps / res.wall_s, "entropy": res.final("entropy")}


BASE = dict(fused=True, broadcast=False, batched=True)
LEVERS = [  # (label, runner, options); each "+" row adds one thing to the row named in its label
    ("baseline (explicit attention, broadcast cosine, loops)", "loop", dict(fused=False, broadcast=True, batched=False)),
    ("+ fused attention, loss from its output", "loop", dict(fused=True, broadcast=True, batched=False)),
    ("+ cosine as a matmul of unit vectors", "loop", dict(fused=True, broadcast=False, batched=False)),
    ("+ one batched KDE across images and blocks", "loop", BASE),
    ("  + channels-last input", "loop", {**BASE, "channels_last": True}),
    ("psaq library, defaults (fp32, eager: the batched-KDE loop above)", "library", dict()),
    ("  + compiled KDE", "library", dict(compile="kde")),
    ("  + compiled model", "library", dict(compile="model")),
    ("  + bf16 autocast", "library", dict(precision="bf16")),
    ("  + bf16 autocast + compiled KDE", "library", dict(precision="bf16", compile="kde")),
    ("  + bf16 autocast + compiled KDE and model", "library", dict(precision="bf16", compile="all")),
]
GPU_LEVERS = [
    ("  + bf16 + compiled KDE and model + CUDA graphs", "library", dict(precision="bf16", compile="all", cuda_graphs=True)),
]
SEEDS_IN_BATCH = 3  # several seeds' images in one batch: per-seed steps/s = steps/s × seeds


def build(name: str, img_size: int = 224):
    if name == "digits-vit":
        loaded = model_stage.load(".", ModelConfig("digits-vit"), "cpu", progress=False)
        return loaded.model, loaded.spec
    timm_names = {"deit_tiny": "deit_tiny_patch16_224", "deit_base": "deit_base_patch16_224",
                  "swin_tiny": "swin_tiny_patch4_window7_224"}
    torch.manual_seed(0)
    sized = {} if img_size == 224 else {"img_size": img_size}
    model = timm.create_model(timm_names[name], **sized).eval()
    return model, InputSpec((3, img_size, img_size), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1000)


def speed(model, spec, device, levers, steps: int, repeats: int) -> list[dict]:
    """Every lever ``repeats`` times, in turns; one record per lever. The several-seeds row uses
    the library options that were fastest in the first turn."""
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in levers}
    runs["multi"] = []
    errors: dict[str, str] = {}
    cfg = SynthesisConfig()
    for rep in range(repeats):
        for label, runner, options in levers:
            if label in errors:
                continue
            try:
                if runner == "loop":
                    runs[label].append(loop(model, spec, SynthesisConfig(steps_per_round=steps + 1, rounds=1,
                                                                         warmup_steps=1, jitter_px=(15,)),
                                            device, **options))
                else:
                    runs[label].append(library(model, spec, device, steps, **options))
            except Exception as exc:  # noqa: BLE001 - a lever that fails here is recorded, not hidden
                errors[label] = f"{type(exc).__name__}: {exc}"[:300]
                print(label, "failed:", errors[label], flush=True)
            else:
                print(f"  repeat {rep}: {label.strip()}: {runs[label][-1]['steps_per_s']:.3f} steps/s", flush=True)
        if rep == 0:
            timed = [(runs[label][0]["steps_per_s"], options) for label, runner, options in levers
                     if runner == "library" and runs[label]]
            best = max(timed, key=lambda t: t[0])[1] if timed else {}
        if "multi" in errors:
            continue
        try:
            r = library(model, spec, device, steps, num_samples=cfg.num_samples * SEEDS_IN_BATCH, **best)
        except Exception as exc:  # noqa: BLE001
            errors["multi"] = f"{type(exc).__name__}: {exc}"[:300]
        else:
            runs["multi"].append({**r, "steps_per_s": r["steps_per_s"] * SEEDS_IN_BATCH})
    records = []
    labels = [label for label, _, _ in levers] + ["multi"]
    best_name = ", ".join(f"{k} {v}" for k, v in best.items()) or "library defaults"
    for label in labels:
        name = label if label != "multi" else f"  {SEEDS_IN_BATCH} seeds in one batch of {cfg.num_samples * SEEDS_IN_BATCH}, {best_name} (per-seed steps/s)"
        if label in errors:
            records.append({"lever": name, "error": errors[label]})
            continue
        sps = [r["steps_per_s"] for r in runs[label]]
        records.append({"lever": name, "steps_per_s": statistics.median(sps), "runs": sps,
                        "entropy": runs[label][-1]["entropy"]})
    return records


def median_time(fn, device, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def breakdown(model, spec: InputSpec, device) -> list[list[str]]:
    """Where one step's time goes: model forward+backward, similarity, KDE; eager and compiled."""
    model = copy.deepcopy(model).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn((32, *spec.input_size), device=device, requires_grad=True)
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    with AttentionOutputHooks(model) as hooks:
        def fwd_bwd(dtype):
            def run():
                ctx = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
                with ctx:
                    y = model(x)
                hooks.take()
                y.float().sum().backward()
            return run
        with FlopCounterMode(display=False) as counter:
            fwd_bwd(None)()
        flops = counter.get_total_flops()
        model_fp32 = median_time(fwd_bwd(None), device)
        model_bf16 = median_time(fwd_bwd(torch.bfloat16), device)
        model(x)
        captured = hooks.take()
    tokens = torch.cat([mean_over_heads(c.output.detach().float(), c.num_heads)[:, prefix:] for c in captured])
    tokens.requires_grad_(True)
    sims = pairwise_similarities(tokens).detach().requires_grad_(True)
    compiled = torch.compile(kde_entropy, dynamic=False)
    sim_t = median_time(lambda: pairwise_similarities(tokens).sum().backward(), device)
    kde_t = median_time(lambda: kde_entropy(sims).sum().backward(), device)
    kde_c = median_time(lambda: compiled(sims).sum().backward(), device)
    elements = sims.numel() * 10
    rows = [
        ["model forward + backward, fp32", f"{model_fp32 * 1e3:.0f}", f"{flops / 1e9:.0f} GFLOP → {flops / model_fp32 / 1e9:.0f} GFLOP/s"],
        ["model forward + backward, bf16 autocast", f"{model_bf16 * 1e3:.0f}", f"{flops / model_bf16 / 1e9:.0f} GFLOP/s"],
        ["cosine similarities (all blocks, matmul)", f"{sim_t * 1e3:.0f}", f"{sims.shape[0]} rows × {sims.shape[1]} pairs"],
        ["KDE entropy, eager", f"{kde_t * 1e3:.0f}", f"(rows, grid, pairs) = {elements / 1e6:.2f} M elements, {elements * 4 / 1e6:.1f} MB per pass"],
        ["KDE entropy, compiled (fused)", f"{kde_c * 1e3:.0f}", f"{kde_t / kde_c:.1f}× the eager KDE"],
    ]
    return rows


QUALITY = [  # (label, runner, options); each runs 3 seeds × the full schedule unless it says otherwise
    ("baseline", "loop", dict(fused=False, broadcast=True, batched=False)),
    ("psaq (library defaults)", "library", dict()),
    ("psaq, bf16 + compiled KDE", "library", dict(precision="bf16", compile="kde")),
    ("psaq, 2×250 steps", "library", dict(steps_per_round=250, warmup_steps=50)),
    ("psaq, 2×100 steps", "library", dict(steps_per_round=100, warmup_steps=20)),
    ("psaq, plateau stop (50 steps, <1 %)", "loop", {**BASE, "stop_window": 50, "stop_tol": 0.01}),
]


QUALITY_SETTINGS = {"W4A8": QuantConfig(w_bits=4, a_bits=8), "W8A8": QuantConfig(w_bits=8, a_bits=8),
                    "W8A4 mse": QuantConfig(w_bits=8, a_bits=4, act_observer="mse")}


def quality(device, seeds: list[int]) -> tuple[list[dict], float]:
    loaded = model_stage.load(".", ModelConfig("digits-vit"), device, progress=False)
    data = eval_loader(model_data(loaded, "digits"))
    fp = evaluate(loaded.model, data, device)
    rows = []
    for seed in seeds:  # in turns: every implementation for one seed, then the next seed
        for label, runner, options in QUALITY:
            schedule = {k: options[k] for k in ("steps_per_round", "warmup_steps") if k in options}
            cfg = SynthesisConfig(seed=seed, **schedule)
            t = time.perf_counter()
            if runner == "loop":
                out = loop(loaded.model, loaded.spec, cfg, device, **options)
                images, sps, ent, steps = out["images"], out["steps_per_s"], out["entropy"], out["steps"]
            else:
                extra = {k: v for k, v in options.items() if k not in schedule}
                res = synthesize(loaded.model, SynthesisConfig(seed=seed, **schedule, **extra), loaded.spec, device,
                                 progress=False)
                images, sps, ent, steps = res.images, res.steps_per_s, res.final("entropy"), res.steps
            row = {"impl": label, "seed": seed, "steps": steps, "steps_per_s": sps, "final_entropy": ent,
                   "wall_s": time.perf_counter() - t}
            for column, quant in QUALITY_SETTINGS.items():
                q = quantized_copy(loaded.model, quant, images, device)
                row[column] = evaluate(q, data, device, fp.predictions).top1
            rows.append(row)
            print(row, flush=True)
    return rows, fp.top1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["digits-vit", "deit_tiny"])
    ap.add_argument("--steps", type=int, nargs="+", default=None,
                    help="timed steps per model (default: 40 for digits-vit and on a GPU, 3 for 224-px models on a CPU)")
    ap.add_argument("--repeats", type=int, default=3, help="turns over all levers (default: %(default)s)")
    ap.add_argument("--quality-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-breakdown", action="store_true")
    ap.add_argument("--skip-compiled", action="store_true",
                    help="leave out the torch.compile levers (gpu_check.sh's CPU dry run: compiling takes minutes there)")
    ap.add_argument("--img-size", type=int, default=224,
                    help="input side of the timm models (gpu_check.sh's CPU dry run: 64, 16 tokens)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    # on a GPU every model compilation takes tens of seconds: skip the fp32 compiled-model row there
    levers = [lv for lv in LEVERS if not (gpu and lv[0] == "  + compiled model")] + (GPU_LEVERS if gpu else [])
    if args.skip_compiled:
        levers = [lv for lv in levers if "compile" not in lv[2]]
    torch._dynamo.config.cache_size_limit = 64  # many models and shapes in one process
    results: dict = {"device": str(device), "threads": torch.get_num_threads(), "speed": [], "quality": []}
    if gpu:
        results["card"] = torch.cuda.get_device_name()
    speed_rows = []
    for k, name in enumerate(args.models):
        model, spec = build(name, args.img_size)
        steps = args.steps[k] if args.steps else (40 if name == "digits-vit" or gpu else 3)
        print(f"{name}: {steps} timed steps per lever, {args.repeats} turns", flush=True)
        records = speed(model, spec, device, levers, steps, args.repeats)
        base = records[0].get("steps_per_s") if records else None
        for rec in records:
            results["speed"].append({"model": name, **rec})
            if "error" in rec:
                speed_rows.append([name, rec["lever"], "failed: " + rec["error"][:80], "–", "–", "–"])
                continue
            spread = f"{min(rec['runs']):.2f}–{max(rec['runs']):.2f}" if len(rec["runs"]) > 1 else "–"
            speed_rows.append([name, rec["lever"], f"{rec['steps_per_s']:.2f}", spread,
                               f"{rec['steps_per_s'] / base:.2f}×" if base else "–", f"{rec['entropy']:.3f}"])
        if not args.skip_breakdown:
            results.setdefault("breakdown", {})[name] = breakdown(model, spec, device)
        write(args, results, speed_rows)  # after every model: a run cut short keeps what it measured
    if not args.skip_quality:
        results["quality"], results["fp32_top1"] = quality(device, args.quality_seeds)
    print("\n" + write(args, results, speed_rows))


def write(args, results: dict, speed_rows: list) -> str:
    device, gpu = results["device"], "card" in results
    card = f", {results['card']}" if gpu else f", {results['threads']} threads"
    text = []
    if speed_rows:
        text += [f"\n## Steps/s, lever by lever ({device}{card}, batch 32; median of {args.repeats} turns)\n",
                 markdown_table(["model", "lever", "steps/s", "range", "vs baseline", "entropy after the timed steps"],
                                speed_rows)]
    for name, rows in results.get("breakdown", {}).items():
        text += [f"\n## Where a {name} step goes ({device}, batch 32, median of 5)\n",
                 markdown_table(["part", "ms", "size / rate"], rows)]
    if results["quality"]:
        rows = []
        for label, _, _ in QUALITY:
            sel = [r for r in results["quality"] if r["impl"] == label]
            rows.append([label, fmt_mean_std([r["steps"] for r in sel], 0), fmt_mean_std([r["steps_per_s"] for r in sel], 1),
                         fmt_mean_std([r["wall_s"] for r in sel], 1), fmt_mean_std([r["final_entropy"] for r in sel], 2),
                         *(fmt_mean_std([r[c] for r in sel], 2) for c in QUALITY_SETTINGS)])
        text += [f"\n## Equal quality: digits-vit, seeds {args.quality_seeds} (FP32 {results['fp32_top1']:.2f})\n",
                 markdown_table(["implementation", "steps", "steps/s", "wall s", "final entropy",
                                 *(f"{c} top-1" for c in QUALITY_SETTINGS)], rows)]
    out = "\n".join(text)
    suffix = "" if device == "cpu" else f"_{torch.device(device).type}"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"synthesis_levers{suffix}.md").write_text(out + "\n")
    Path(args.out, f"synthesis_levers{suffix}.json").write_text(json.dumps(results, indent=1, default=str))
    return out


if __name__ == "__main__":
    main()
