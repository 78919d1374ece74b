"""How fast psaq's faithful default synthesizes and evaluates, against the model itself, against
the official code, and beside other work on the same cores.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/synthesis_speed.py           # about 8 minutes on 2 cores
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/synthesis_speed.py --skip-official --skip-contention

Four models: digits-vit and two Fashion-MNIST models trained by the pipeline itself
(``fashion-vit``: the DeiT layout at 28 px with patch 7, a 4×4 token grid and a class token,
depth 6; ``fashion-swin``: a timm Swin at 28 px, patch 2, windows of 7×7), trained into the
project's store on first use, and DeiT-Tiny at 224 px on random weights (speed does not depend
on them). Per model, in turns so that drift on a shared machine hits both alike:

* the model's own forward + backward with respect to a batch of 32 inputs (weights frozen, as
  in synthesis) against one step of ``psaq.synth.synthesize`` with the defaults, timed as the
  difference between a run of n + 1 steps and a run of 1 step (set-up and first-step costs
  cancel);
* evaluation in images/s: a plain loop over the test tensors (``inference_mode``, batch 128),
  ``psaq.evaluation`` on the float model, and on the W8A8 model with the official sites, in
  turns, the best of each (at least 2 turns, and enough for a second of the plain loop);
* the official code's loop (``official_loop.py``, imported from a snapshot of zkkli/PSAQ-ViT)
  at DeiT-Tiny 224, batch 32, against psaq's step on the same model;
* a step with 1 and 2 competing CPU-bound processes: with torch's default threads (one per
  core) and with the threads psaq's stages choose (``psaq.cores``: one per idle core).

Writes benchmarks/results/synthesis_speed.{md,json}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from official_loop import DEFAULT_SNAPSHOT, official_step_seconds

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT)
from psaq.allocator import keep_freed_memory
from psaq.cores import choose_threads
from psaq.data import loader
from psaq.evaluation import evaluate
from psaq.models import ModelConfig
from psaq.stages import model as model_stage
from psaq.quant import QuantConfig, quantized_copy
from psaq.report import markdown_table
from psaq.sources import model_data
from psaq.synth import SynthesisConfig, synthesize

BATCH = 32  # the paper's synthesis batch
EVAL_BATCH = 128  # psaq's eval.batch_size default
MODELS = {  # name → (ModelConfig, what the table says about its weights, timed synthesis steps)
    "digits-vit": (ModelConfig("digits-vit"), "trained (digits)", 40),
    "fashion-vit": (ModelConfig("fashion-vit"), "trained (Fashion-MNIST)", 40),
    "fashion-swin": (ModelConfig("fashion-swin"), "trained (Fashion-MNIST)", 20),
    "deit_tiny": (ModelConfig("deit_tiny_patch16_224", random_weights=True), "random", 3),
}
EVAL_TURNS, EVAL_SECONDS = 2, 1.0  # evaluation: at least this many turns, and this long for the plain loop
RANDOM_EVAL_IMAGES = 256  # a model without a test set is timed on this many N(0, 1) images


def test_tensors(name: str, loaded) -> tuple[torch.Tensor, torch.Tensor]:
    if loaded.dataset is None:
        g = torch.Generator().manual_seed(0)
        return (torch.randn((RANDOM_EVAL_IMAGES, *loaded.spec.input_size), generator=g),
                torch.randint(0, loaded.spec.num_classes, (RANDOM_EVAL_IMAGES,), generator=g))
    data = model_data(loaded).eval_set
    return data.tensors if isinstance(data, TensorDataset) else tuple(torch.stack(t) for t in zip(*data))


def step_seconds(model, spec, steps: int) -> float:
    """One synthesis step with the defaults: (run of steps + 1) − (run of 1), over ``steps``."""
    def run(n: int) -> float:
        cfg = SynthesisConfig(num_samples=BATCH, rounds=1, steps_per_round=n, warmup_steps=0, jitter_px=(15,))
        return synthesize(model, cfg, spec, "cpu", progress=False).wall_s

    return (run(steps + 1) - run(1)) / steps


def bare_seconds(model, spec, repeats: int) -> float:
    """The model's own forward + backward with respect to 32 inputs, median of ``repeats``."""
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    x = torch.randn((BATCH, *spec.input_size), requires_grad=True)
    times = []
    try:
        for _ in range(repeats + 1):
            x.grad = None
            t = time.perf_counter()
            model(x).sum().backward()
            times.append(time.perf_counter() - t)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return statistics.median(times[1:])  # the first run warms the allocator


def eval_speed(model, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """images/s: a plain loop, psaq.evaluation on the float model and on its W8A8 copy."""
    def plain() -> None:
        with torch.inference_mode():
            for i in range(0, len(images), EVAL_BATCH):
                model(images[i:i + EVAL_BATCH]).argmax(dim=1)

    data = loader(TensorDataset(images, labels), EVAL_BATCH)
    calib = torch.randn((BATCH, *images.shape[1:]), generator=torch.Generator().manual_seed(1))
    quantized = quantized_copy(model, QuantConfig(w_bits=8, a_bits=8), calib, "cpu")
    runs = {"plain loop": plain, "psaq float": lambda: evaluate(model, data, "cpu"),
            "psaq W8A8": lambda: evaluate(quantized, data, "cpu")}
    times: dict[str, list[float]] = {label: [] for label in runs}
    # in turns, so that drift hits the three alike; a set that passes in milliseconds (digits-vit's
    # 360 images) gets turns enough for about EVAL_SECONDS each
    turn = 0
    while turn < EVAL_TURNS or sum(times["plain loop"]) < EVAL_SECONDS:
        for label, fn in runs.items():
            t = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t)
        turn += 1
    return {label: len(images) / min(ts) for label, ts in times.items()}


@contextlib.contextmanager
def competitors(n: int):
    """``n`` CPU-bound processes (a Python busy loop each) for the duration."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(0.5 if n else 0)
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


@contextlib.contextmanager
def threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def psaq_threads() -> int:
    """The count psaq's stages choose when nothing is set (OMP_NUM_THREADS lifted for the call)."""
    saved = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        return choose_threads(None).count
    finally:
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved


def contention(model, spec, steps: int, cores: int) -> list[dict]:
    rows = []
    with threads(cores):
        quiet = statistics.median(step_seconds(model, spec, steps) for _ in range(3))
    rows.append({"competitors": 0, "threads": cores, "chooser": "quiet", "step_s": quiet, "ratio": 1.0})
    for n in (1, 2):
        with competitors(n):
            for chooser in ("torch default", "psaq.cores"):
                count = cores if chooser == "torch default" else psaq_threads()
                with threads(count):
                    s = statistics.median(step_seconds(model, spec, steps) for _ in range(3))
                rows.append({"competitors": n, "threads": count, "chooser": chooser, "step_s": s, "ratio": s / quiet})
                print(f"  {n} competitor(s), {chooser}: {count} threads, {s:.3f} s per step ({s / quiet:.2f}× quiet)",
                      flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--repeats", type=int, default=3, help="turns of (forward + backward, psaq step) per model")
    ap.add_argument("--store", default=".", help="the artifact store the pipeline's models are trained into")
    ap.add_argument("--official", type=Path, default=DEFAULT_SNAPSHOT,
                    help="the official code: a work tree or a git directory of zkkli/PSAQ-ViT (default: %(default)s)")
    ap.add_argument("--official-steps", type=int, default=2)
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--skip-contention", action="store_true")
    ap.add_argument("--contention-models", nargs="+", default=["fashion-vit", "deit_tiny"], choices=list(MODELS))
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--system-allocator", action="store_true",
                    help="leave glibc's defaults (runtime.keep_freed_memory: false) to measure what keeping freed memory buys")
    args = ap.parse_args()
    cores = torch.get_num_threads()
    memory = keep_freed_memory(not args.system_allocator)  # as the stages do, before any tensor
    # contention runs before the official code: after its multi-GB tensors are freed, this
    # process's small-model steps ran 2x slower for a while (measured), quiet or not
    print(f"plan: {len(args.models)} models x {args.repeats} turns of (forward + backward, psaq step), evaluation "
          f"float and W8A8; official code {'skipped' if args.skip_official else f'{args.official_steps + 1} steps (~1 min each)'}; "
          f"contention {'skipped' if args.skip_contention else 'on ' + ', '.join(args.contention_models)}; "
          f"{cores} threads. About 8 minutes on 2 cores once the models are trained; a model not yet in "
          f"the store is trained first (digits-vit ~1 min, fashion-vit ~9 min, fashion-swin ~10 min).", flush=True)
    print(f"memory: {memory.reason}", flush=True)
    results: dict = {"threads": cores, "allocator": memory.reason, "models": {}, "contention": {}}
    loaded_models = {}
    for name in args.models:
        config, weights, steps = MODELS[name]
        loaded = model_stage.load(args.store, config, "cpu", progress=True)
        loaded_models[name] = loaded
        turns = []
        for _ in range(args.repeats):
            turns.append((bare_seconds(loaded.model, loaded.spec, 3), step_seconds(loaded.model, loaded.spec, steps)))
        ratios = [s / b for b, s in turns]
        images, labels = test_tensors(name, loaded)
        row = {"weights": weights, "steps": steps, "bare_s": statistics.median(b for b, _ in turns),
               "step_s": statistics.median(s for _, s in turns), "ratio": statistics.median(ratios),
               "ratio_range": [min(ratios), max(ratios)], "eval_images": len(images),
               "eval": eval_speed(loaded.model, images, labels)}
        results["models"][name] = row
        print(f"{name}: forward+backward {row['bare_s']:.3f} s, psaq step {row['step_s']:.3f} s ({row['ratio']:.2f}x); "
              + ", ".join(f"{k} {v:.0f} img/s" for k, v in row["eval"].items()), flush=True)
        write(args, results)
    if not args.skip_contention:
        for name in args.contention_models:
            loaded = loaded_models.get(name) or model_stage.load(args.store, MODELS[name][0], "cpu")
            print(f"contention, {name}:", flush=True)
            results["contention"][name] = contention(loaded.model, loaded.spec, MODELS[name][2], cores)
            write(args, results)
    if not args.skip_official:
        psaq_step = results["models"].get("deit_tiny", {}).get("step_s")
        if psaq_step is None:
            loaded = model_stage.load(args.store, MODELS["deit_tiny"][0], "cpu")
            psaq_step = statistics.median(step_seconds(loaded.model, loaded.spec, 3) for _ in range(args.repeats))
        official = official_step_seconds(args.official, "deit_tiny", BATCH, args.official_steps)
        results["official"] = {"official_step_s": official, "psaq_step_s": psaq_step, "speedup": official / psaq_step}
        print(f"official code: {official:.1f} s per step; psaq {psaq_step:.2f} s: {official / psaq_step:.1f}x", flush=True)
        write(args, results)
    print("\n" + write(args, results))


def write(args, results: dict) -> str:
    threads_note = f"{results['threads']} threads, {results.get('allocator', 'system defaults')}"
    rows, evals = [], []
    for name, r in results["models"].items():
        rows.append([name, r["weights"], f"{r['bare_s']:.3f}", f"{r['step_s']:.3f}", f"{r['ratio']:.2f}×",
                     f"{r['ratio_range'][0]:.2f}–{r['ratio_range'][1]:.2f}"])
        e = r["eval"]
        evals.append([name, str(r["eval_images"]), f"{e['plain loop']:.0f}", f"{e['psaq float']:.0f}",
                      f"{e['psaq W8A8']:.0f}", f"{e['psaq float'] / e['psaq W8A8']:.2f}×"])
    text = [f"## psaq's synthesis step against the model's own forward + backward (CPU, {threads_note}, batch "
            f"{BATCH}, faithful default; median of {args.repeats} turns)\n",
            markdown_table(["model", "weights", "forward + backward s", "psaq step s", "ratio", "ratio range"], rows),
            f"\n## Evaluation, images/s (CPU, {threads_note}, batch {EVAL_BATCH}; best of {EVAL_TURNS} or more turns, "
            f"at least {EVAL_SECONDS:g} s of plain loop)\n",
            markdown_table(["model", "images", "plain loop, float", "psaq float", "psaq W8A8 (official sites)",
                            "W8A8 time / float time"], evals)]
    if "official" in results:
        o = results["official"]
        text += [f"\n## The official code side by side (DeiT-Tiny 224, random weights, batch {BATCH}, CPU, {threads_note})\n",
                 markdown_table(["implementation", "s per step"],
                                [["official code (zkkli/PSAQ-ViT generate_data, on the CPU)", f"{o['official_step_s']:.1f}"],
                                 ["psaq, faithful default", f"{o['psaq_step_s']:.2f}"],
                                 ["psaq speed-up", f"{o['speedup']:.1f}×"]])]
    for name, rows_c in results["contention"].items():
        text += [f"\n## A {name} step beside CPU-bound processes (median of 3)\n",
                 markdown_table(["competing processes", "threads from", "threads", "s per step", "× quiet"],
                                [[str(c["competitors"]), c["chooser"], str(c["threads"]), f"{c['step_s']:.3f}",
                                  f"{c['ratio']:.2f}×"] for c in rows_c])]
    out = "\n".join(text)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.out, "synthesis_speed.md").write_text(out + "\n")
    Path(args.out, "synthesis_speed.json").write_text(json.dumps(results, indent=1))
    return out


if __name__ == "__main__":
    main()
