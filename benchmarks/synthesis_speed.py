"""Synthesis speed: a straightforward PSAQ-ViT implementation (kept here only) against psaq,
lever by lever, on the same model, device, batch and seed, in one process, in turns.

    .venv/bin/python benchmarks/synthesis_speed.py                   # digits-vit + DeiT-Tiny at 224, CPU
    .venv/bin/python benchmarks/synthesis_speed.py --device cuda --models deit_tiny deit_base swin_tiny

The baseline: fp32; timm's explicit attention path; per-block and per-image Python loops over
the KDE; cosine similarity by broadcasting (a (B, N, N, d) tensor, as in the official code);
10-point grid; 2 × 500 steps. Each lever row changes one thing on top of the row above it.
Quality: the top-1 each one's samples give after calibration at W4A8 and W8A8 on digits-vit.
Writes benchmarks/results/synthesis_speed{,_<device>}.{md,json}.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

from psaq.data import DIGITS_SPEC, InputSpec
from psaq.evaluate import evaluate
from psaq.models import ModelConfig, load_model
from psaq.quant import QuantConfig
from psaq.report import fmt_mean_std, markdown_table
from psaq.synth import SynthesisConfig, synthesize
from psaq.synth.entropy import block_entropies
from psaq.synth.hooks import AttentionOutputHooks
from psaq.synth.kde import kde_entropy
from psaq.synth.priors import jitter_and_flip, scaled_jitter, total_variation, tv_target_scale, warmup_cosine_lr
from psaq.workflow import eval_loader, quantized_copy


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


def optimize(model, spec: InputSpec, cfg: SynthesisConfig, device, *, fused: bool, broadcast: bool, batched: bool,
             compiled: bool = False, channels_last: bool = False, steps: int | None = None,
             autocast: bool = False) -> dict:
    """The PSAQ loop with each lever switchable (the library's own loop is psaq.synth.optimize)."""
    model = copy.deepcopy(model).to(device).eval()
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = fused
    for p in model.parameters():
        p.requires_grad_(False)
    forward = torch.compile(model) if compiled else model
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn((cfg.num_samples, *spec.input_size), generator=g).to(device)
    labels = torch.randint(0, spec.num_classes, (cfg.num_samples,), generator=g).to(device)
    v = (2500 + 500 * float(torch.rand(1, generator=g))) * tv_target_scale(x.shape)
    lo, hi = spec.pixel_bounds(device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    total = steps or cfg.total_steps
    per_round = total // cfg.rounds
    warm = min(cfg.warmup_steps, per_round - 1)
    done, started, ent = 0, None, float("nan")
    with AttentionOutputHooks(model) as hooks:
        for r in range(cfg.rounds):
            opt = torch.optim.Adam([x], lr=0.2, betas=cfg.betas, eps=cfg.adam_eps)
            shift = scaled_jitter(cfg.jitter_px[r], spec.input_size[-1])
            for s in range(per_round):
                if done == 1:
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                    started = time.perf_counter()  # the first step (compilation, allocator warm-up) is not timed
                for group in opt.param_groups:
                    group["lr"] = warmup_cosine_lr(s, per_round, warm, 0.2)
                xa = jitter_and_flip(x, shift, cfg.flip_prob, g)
                ctx = torch.autocast(device.type, dtype=torch.bfloat16) if autocast else nullcontext()
                with ctx:
                    logits = forward(xa)
                    captured = hooks.take()
                    if batched:
                        entropy = block_entropies(captured, prefix).sum()
                    else:
                        entropy = sum(naive_block_entropy(c.output.float(), c.num_heads, prefix, broadcast) for c in captured)
                loss = -entropy + F.cross_entropy(logits.float(), labels) + 0.05 * (total_variation(xa) - v).abs()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.copy_(torch.maximum(torch.minimum(x, hi), lo))
                ent = float(entropy.detach())
                done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - started if started else float("nan")
    return {"steps_per_s": (done - 1) / wall if done > 1 else float("nan"), "entropy": ent,
            "images": x.detach().float().contiguous().cpu()}


LEVERS = [
    ("baseline (explicit attention, broadcast cosine, loops)", dict(fused=False, broadcast=True, batched=False)),
    ("+ fused attention, loss from its output", dict(fused=True, broadcast=True, batched=False)),
    ("+ cosine as a matmul of unit vectors", dict(fused=True, broadcast=False, batched=False)),
    ("+ one batched KDE across images and blocks (psaq)", dict(fused=True, broadcast=False, batched=True)),
    ("+ torch.compile", dict(fused=True, broadcast=False, batched=True, compiled=True)),
    ("+ channels-last input", dict(fused=True, broadcast=False, batched=True, channels_last=True)),
]
# several seeds' images in one batch: per-seed throughput is steps/s × seeds
MULTI_SEED = ("+ 3 seeds in one batch of 96 (per-seed steps/s)", dict(fused=True, broadcast=False, batched=True), 3)
GPU_LEVERS = [("+ bf16 autocast (GPU)", dict(fused=True, broadcast=False, batched=True, autocast=True))]


def build(name: str):
    if name == "digits-vit":
        loaded = load_model(ModelConfig("digits-vit"), ".psaq-cache", "cpu", progress=False)
        return loaded.model, loaded.spec
    timm_names = {"deit_tiny": "deit_tiny_patch16_224", "deit_base": "deit_base_patch16_224",
                  "swin_tiny": "swin_tiny_patch4_window7_224"}
    torch.manual_seed(0)
    model = timm.create_model(timm_names[name]).eval()
    return model, InputSpec((3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", nargs="+", default=["digits-vit", "deit_tiny"])
    ap.add_argument("--steps", type=int, nargs="+", default=None,
                    help="timed steps per model (default: 60 for digits-vit, 3 for 224-px models on CPU)")
    ap.add_argument("--quality-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = SynthesisConfig()
    levers = LEVERS + (GPU_LEVERS if device.type == "cuda" else [])
    speed_rows, results = [], {"device": str(device), "speed": [], "quality": []}
    if device.type == "cuda":
        results["card"] = torch.cuda.get_device_name()
    for k, name in enumerate(args.models):
        model, spec = build(name)
        steps = (args.steps[k] if args.steps else (60 if name == "digits-vit" or device.type == "cuda" else 3))
        base = None
        for label, flags in levers:
            try:
                r = optimize(model, spec, cfg, device, steps=steps + 1, **flags)
            except Exception as exc:  # noqa: BLE001 - a lever that fails here is recorded, not hidden
                results["speed"].append({"model": name, "lever": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
                speed_rows.append([name, label, "failed", "–", "–"])
                print(name, label, "failed:", exc, flush=True)
                continue
            base = base or r["steps_per_s"]
            results["speed"].append({"model": name, "lever": label, "steps_per_s": r["steps_per_s"], "entropy": r["entropy"]})
            speed_rows.append([name, label, f"{r['steps_per_s']:.2f}", f"{r['steps_per_s'] / base:.2f}×", f"{r['entropy']:.3f}"])
            print(speed_rows[-1], flush=True)
        label, flags, seeds = MULTI_SEED
        multi_cfg = SynthesisConfig(num_samples=cfg.num_samples * seeds)
        r = optimize(model, spec, multi_cfg, device, steps=steps + 1, **flags)
        per_seed = r["steps_per_s"] * seeds
        results["speed"].append({"model": name, "lever": label, "steps_per_s": per_seed, "entropy": r["entropy"]})
        speed_rows.append([name, label, f"{per_seed:.2f}", f"{per_seed / base:.2f}×", f"{r['entropy']:.3f}"])
        print(speed_rows[-1], flush=True)
        if name == "digits-vit" and not args.skip_quality:
            loaded = load_model(ModelConfig("digits-vit"), ".psaq-cache", device, progress=False)
            data = eval_loader(loaded, "digits")
            fp = evaluate(loaded.model, data, device)
            for label, run, per_round in [("baseline", "baseline", 500), ("psaq", "library", 500),
                                          ("psaq, 2×250 steps", "library", 250)]:
                for seed in args.quality_seeds:
                    s_cfg = SynthesisConfig(seed=seed, steps_per_round=per_round)
                    t = time.perf_counter()
                    if run == "baseline":
                        out = optimize(loaded.model, spec, s_cfg, device, **LEVERS[0][1])
                        images, sps, ent = out["images"], out["steps_per_s"], out["entropy"]
                    else:
                        res = synthesize(loaded.model, s_cfg, spec, device, progress=False)
                        images, sps, ent = res.images, res.steps_per_s, res.final("entropy")
                    wall = time.perf_counter() - t
                    row = {"impl": label, "seed": seed, "steps_per_s": sps, "final_entropy": ent, "wall_s": wall}
                    for w, a in [(4, 8), (8, 8)]:
                        q = quantized_copy(loaded.model, QuantConfig(w_bits=w, a_bits=a), images, device)
                        row[f"W{w}A{a}"] = evaluate(q, data, device, fp.predictions).top1
                    results["quality"].append(row)
                    print(row, flush=True)
            results["fp32_top1"] = fp.top1
    text = ["## Steps/s, lever by lever (" + str(device) + (f", {results.get('card')}" if "card" in results else "")
            + ", batch 32)\n", markdown_table(["model", "lever", "steps/s", "vs baseline", "final entropy"], speed_rows)]
    if results["quality"]:
        q = results["quality"]
        rows = []
        for impl in ("baseline", "psaq", "psaq, 2×250 steps"):
            sel = [r for r in q if r["impl"] == impl]
            rows.append([impl, fmt_mean_std([r["steps_per_s"] for r in sel], 1), fmt_mean_std([r["wall_s"] for r in sel], 0),
                         fmt_mean_std([r["final_entropy"] for r in sel], 2), fmt_mean_std([r["W4A8"] for r in sel], 2),
                         fmt_mean_std([r["W8A8"] for r in sel], 2)])
        text += [f"\n## Equal quality: digits-vit, {len(args.quality_seeds)} seeds (FP32 {results['fp32_top1']:.2f})\n",
                 markdown_table(["implementation", "steps/s", "wall s", "final entropy", "W4A8 top-1", "W8A8 top-1"], rows)]
    out = "\n".join(text)
    print("\n" + out)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, f"synthesis_speed{suffix}.md").write_text(out + "\n")
    Path(args.out, f"synthesis_speed{suffix}.json").write_text(json.dumps(
        {k: v for k, v in results.items()}, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))


if __name__ == "__main__":
    main()
