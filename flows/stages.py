"""The pipeline's stages as plain commands, for ``dvc repro`` (see dvc.yaml).

Each command calls the same task function as the Prefect flows (its ``.fn``, so no Prefect
server is started per stage) on params.yaml, with the fixed output paths that DVC tracks.

    python -m flows.stages train
    python -m flows.stages synthesize --method psaq --seed 0
    python -m flows.stages fp32
    python -m flows.stages evaluate --method psaq --seed 0 --bits W4A8
    python -m flows.stages report
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from flows.points import model_dict
from psaq.io import read_json
from tasks.artifacts import Artifact
from tasks.params import Params, load_params, parse_bits
from tasks.settings import code_version

ROOT = Path("dvc")  # outputs live under <kind>/dvc/ so they never collide with the flows' content-addressed ones
MODEL = Path("models") / ROOT / "model.safetensors"
FP32 = Path("metrics") / ROOT / "fp32.json"


def samples_path(method: str, seed: int) -> Path:
    return Path("data/samples") / ROOT / f"{method}-seed{seed}.parquet"


def point_stem(method: str, seed: int, bits: str) -> str:
    return f"{method}-seed{seed}-{bits}"


def checkpoint(params: Params) -> Artifact | None:
    if params.model.checkpoint:
        from tasks.train import user_checkpoint

        return user_checkpoint(model_dict(params, params.model.train_seed))
    return Artifact.of(MODEL) if MODEL.exists() else None


def train(params: Params, args) -> None:
    from tasks.train import train_model

    MODEL.parent.mkdir(parents=True, exist_ok=True)
    if params.model.name != "digits-vit" or params.model.checkpoint:
        # nothing to train: record the user's weights so later stages depend on them
        raise SystemExit("psaq: the train stage only trains digits-vit; set model.checkpoint and drop this stage")
    train_model.fn(train={**dataclasses.asdict(params.train), "seed": params.model.train_seed}, out=str(MODEL),
                   code=code_version())


def synthesize(params: Params, args) -> None:
    from tasks.synthesize import synthesize_samples

    synth = {**dataclasses.asdict(params.synthesis), "method": args.method, "seed": args.seed}
    synthesize_samples.fn(model=model_dict(params, params.model.train_seed), checkpoint=checkpoint(params),
                          synthesis=synth, runtime=dataclasses.asdict(params.runtime),
                          out=str(samples_path(args.method, args.seed)), code=code_version())


def fp32(params: Params, args) -> None:
    from tasks.evaluate import evaluate_fp32

    evaluate_fp32.fn(model=model_dict(params, params.model.train_seed), checkpoint=checkpoint(params),
                     eval=dataclasses.asdict(params.eval), runtime=dataclasses.asdict(params.runtime), out=str(FP32),
                     code=code_version())


def evaluate(params: Params, args) -> None:
    from tasks.calibrate import calibrate_model
    from tasks.evaluate import evaluate_quantized

    w, a = parse_bits(args.bits)
    quant = {**dataclasses.asdict(params.quant), "w_bits": w, "a_bits": a}
    stem = point_stem(args.method, args.seed, args.bits)
    model, ckpt, runtime = model_dict(params, params.model.train_seed), checkpoint(params), dataclasses.asdict(params.runtime)
    q_out = Path("models/quantized") / ROOT / f"{stem}.safetensors"
    quantized = calibrate_model.fn(model=model, checkpoint=ckpt, samples=Artifact.of(samples_path(args.method, args.seed)),
                                   quant=quant, runtime=runtime, out=str(q_out), code=code_version())
    evaluate_quantized.fn(model=model, checkpoint=ckpt, quantized=quantized, fp32=Artifact.of(FP32),
                          eval=dataclasses.asdict(params.eval), runtime=runtime,
                          out=str(Path("metrics/points") / ROOT / f"{stem}.json"), code=code_version())


def report(params: Params, args) -> None:
    from tasks.report import build_report

    g = params.grid
    records = []
    for method in g.methods:
        for seed in g.seeds:
            for bits in g.bits:
                m = read_json(Path("metrics/points") / ROOT / f"{point_stem(method, seed, bits)}.json")
                records.append({"train_seed": params.model.train_seed, "method": method, "seed": seed, "bits": bits,
                                "observer": params.quant.act_observer, **m})
    samples = {m: Artifact.of(samples_path(m, g.seeds[0])) for m in g.methods}
    build_report.fn(model=model_dict(params, params.model.train_seed), checkpoint=checkpoint(params), records=records,
                    samples=samples, runtime=dataclasses.asdict(params.runtime), out=str(Path("reports") / ROOT / "benchmark.md"),
                    code=code_version())


STAGES = {"train": train, "synthesize": synthesize, "fp32": fp32, "evaluate": evaluate, "report": report}


def main(argv: list[str] | None = None) -> int:
    from psaq.cli import run_entry

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("--method")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--bits")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    args = ap.parse_args(argv)

    def run() -> int:
        STAGES[args.stage](load_params(args.params), args)
        return 0

    return run_entry(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
