"""What keeping freed memory (``runtime.keep_freed_memory``, ``psaq.allocator``) buys a synthesis step.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/allocator_ab.py --models fashion-swin deit_tiny --rounds 3

The allocator setting holds for a whole process, so each measurement is a fresh process, and
the two settings take turns (kept, system, kept, system, …) so that drift on a shared machine
hits both alike. Each process times the model's own forward + backward and psaq's step as
``synthesis_speed.py`` does (3 turns, median) on the models trained into the store.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one(model: str, keep: bool, store: str) -> dict:
    """In this process: the setting first, then the model and the timings."""
    from psaq.allocator import keep_freed_memory

    setting = keep_freed_memory(keep)
    sys.path.insert(0, str(HERE))
    from synthesis_speed import MODELS, bare_seconds, step_seconds

    from psaq.stages import model as model_stage

    config, _, steps = MODELS[model]
    loaded = model_stage.load(store, config, "cpu", progress=False)
    bare, step = [], []
    for _ in range(3):
        bare.append(bare_seconds(loaded.model, loaded.spec, 5))
        step.append(step_seconds(loaded.model, loaded.spec, steps))
    return {"model": model, "kept": setting.applied, "bare_s": statistics.median(bare),
            "step_s": statistics.median(step)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["digits-vit", "fashion-swin", "deit_tiny"])
    ap.add_argument("--rounds", type=int, default=3, help="pairs of processes (kept, system) per model")
    ap.add_argument("--store", default=".")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "KEEP"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1] == "1", args.store)))
        return
    print("| model | allocator | forward + backward s | psaq step s | step, each process | ratio |")
    print("|---|---|---|---|---|---|")
    for model in args.models:
        runs: dict[bool, list[dict]] = {True: [], False: []}
        for _ in range(args.rounds):
            for keep in (True, False):
                out = subprocess.run([sys.executable, __file__, "--one", model, "1" if keep else "0",
                                      "--store", args.store], capture_output=True, text=True, check=True,
                                     env={**os.environ, "PYTHONPATH": str(HERE.parent)})
                runs[keep].append(json.loads(out.stdout.strip().splitlines()[-1]))
        for keep in (True, False):
            bare = statistics.median(r["bare_s"] for r in runs[keep])
            step = statistics.median(r["step_s"] for r in runs[keep])
            each = ", ".join(f"{r['step_s']:.3f}" for r in runs[keep])
            print(f"| {model} | {'kept (default)' if keep else 'system'} | {bare:.3f} | {step:.3f} | {each} | "
                  f"{step / bare:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
