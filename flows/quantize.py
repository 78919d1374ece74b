"""``quantize``: one model × bit setting × calibration mode × seed, through every stage.

    python -m flows.quantize --model digits-vit --w-bits 4 --a-bits 8 --calib psaq --seed 0

Values not given come from params.yaml. As a deployment it takes the same parameters, checked
before any work (a bad value fails the flow run with the reason as its state message):
    prefect deployment run 'quantize/quantize' -p model=digits-vit -p w_bits=4
    prefect deployment run 'quantize/quantize' -p device=cuda -p precision=bf16 -p compile=all
    prefect deployment run 'quantize/quantize' -p headless=true -p calib=psaq-v2 -p v2_discrepancy=features
"""

# no `from __future__ import annotations`: the flow's decorators wrap it, and Prefect resolves
# string annotations in the wrapper's module, where Bits, Method, … are not defined

import argparse
import sys
from typing import Annotated, Literal, Optional

from prefect import flow
from prefect.states import Completed
from pydantic import Field

from flows.entry import RUN_LOG, console, prefect_server, run_entry
from flows.grid import preflight, run_points, tracked
from flows.one_at_a_time import one_at_a_time
from flows.outcome import one_line_failures, point_summary, publish_artifact
from psaq import cancel
from psaq.cli import ArgumentParser
from psaq.params import Params, load_params
from psaq.overrides import apply_overrides
from psaq.pipeline import Point, point_of
from psaq.quant.adaptive import DISCREPANCIES
from psaq.quant.observers import OBSERVERS
from psaq.quant.sites import SITE_SETS
from psaq.synth import SYNTH_METHODS
from psaq.synth.acceleration import COMPILE_TARGETS, PRECISIONS

Method = Literal.__getitem__(tuple(SYNTH_METHODS.names()))
Observer = Literal.__getitem__(tuple(OBSERVERS.names()))
Precision = Literal.__getitem__(tuple(PRECISIONS.names()))
Compile = Literal.__getitem__(tuple(COMPILE_TARGETS.names()))
Sites = Literal.__getitem__(tuple(SITE_SETS.names()))
Discrepancy = Literal.__getitem__(DISCREPANCIES)
Bits = Annotated[Optional[int], Field(ge=2, le=8)]


def point_params(params: Params, **overrides) -> tuple[Params, Point]:
    """params.yaml with one point's overrides (``psaq.overrides``: the command line's names); every
    value is validated by the config dataclasses."""
    params = apply_overrides(params, overrides)
    return params, point_of(params)


@flow(name="quantize", log_prints=True, validate_parameters=True)
@one_line_failures
@one_at_a_time
def quantize(
    model: Optional[str] = None,
    w_bits: Bits = None,
    a_bits: Bits = None,
    calib: Optional[Method] = None,
    seed: Annotated[Optional[int], Field(ge=0)] = None,
    observer: Optional[Observer] = None,
    train_seed: Annotated[Optional[int], Field(ge=0)] = None,
    device: Optional[str] = None,
    precision: Optional[Precision] = None,
    compile: Optional[Compile] = None,
    sites: Optional[Sites] = None,
    headless: Optional[bool] = None,
    v2_discrepancy: Optional[Discrepancy] = None,
    params_path: str = "params.yaml",
) -> dict:
    """One grid point through every stage; parameters left empty come from params.yaml.

    Args:
        model: psaq's own model (digits-vit, fashion-vit, fashion-swin) or any timm model name.
        w_bits: Weight bits, 2 to 8.
        a_bits: Activation bits, 2 to 8.
        calib: Calibration images: psaq (the paper's), psaq-noent (without the entropy term),
            psaq-unique-pairs (psaq's own entropy estimator), psaq-v2 (PSAQ-ViT V2's teacher-student
            rounds), gaussian (noise), gaussian-clamped (noise clipped to valid pixels), real
            (training images; needs data).
        seed: Synthesis seed: which calibration set.
        observer: Activation range rule (minmax is the paper's).
        train_seed: Which of psaq's self-trained models (0, 1, ...).
        device: cpu, cuda, cuda:N, or auto (cuda when present).
        precision: Synthesis autocast dtype: fp32 (the paper's) or bf16.
        compile: What torch.compile fuses during synthesis: none, kde, model or all.
        sites: Quantizer site set: official (the paper's code) or another named set.
        headless: Quantize the backbone alone (the classifier removed): scored by k-NN top-1 over its
            features and their cosine with the float backbone's. Label-free calibration only: gaussian,
            real, or psaq-v2 with v2_discrepancy features.
        v2_discrepancy: What psaq-v2's student is compared with the teacher on: logits (KL) or
            features (the backbone's output tokens; what a headless backbone has).
        params_path: Settings file, relative to the project; the parameters above override it.
    """
    params, point = point_params(load_params(params_path), model=model, w_bits=w_bits, a_bits=a_bits, calib=calib, seed=seed,
                                 observer=observer, train_seed=train_seed, device=device, precision=precision,
                                 compile=compile, sites=sites, headless=headless, v2_discrepancy=v2_discrepancy)
    preflight(params, points=[point])  # before the MLflow run and any task: a bad model name or folder fails here
    with tracked(params, f"quantize {params.model.name} {point.name}") as parent:
        [record], _, _ = run_points(params, [point], parent)
    summary = point_summary(params.model.name, record)
    print(summary)
    publish_artifact("quantize", params.model.name, f"{summary}\n", f"psaq quantize {params.model.name} {point.name}")
    return Completed(message=summary, data=record)


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--w-bits", type=int)
    ap.add_argument("--a-bits", type=int)
    ap.add_argument("--calib")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--observer")
    ap.add_argument("--sites")
    ap.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: params.yaml runtime.device)")
    ap.add_argument("--precision", help="synthesis autocast: fp32 or bf16 (default: params.yaml)")
    ap.add_argument("--compile", help="synthesis torch.compile: none, kde, model, all (default: params.yaml)")
    ap.add_argument("--headless", action="store_true", default=None,
                    help="the backbone alone, scored by k-NN top-1 and feature cosine (label-free calibration only)")
    ap.add_argument("--v2-discrepancy", help="psaq-v2's teacher-student discrepancy: logits or features")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--verbose", action="store_true",
                    help=f"print Prefect's log line of every task run too (otherwise they go to {RUN_LOG})")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    a = ap.parse_args(argv)

    def run() -> int:
        params, point = point_params(load_params(a.params), model=a.model, w_bits=a.w_bits, a_bits=a.a_bits, calib=a.calib,
                                 seed=a.seed, observer=a.observer, device=a.device, precision=a.precision,
                                 compile=a.compile, sites=a.sites, headless=a.headless,
                                 v2_discrepancy=a.v2_discrepancy)
        preflight(params, points=[point])
        with console(a.verbose), prefect_server():
            record = quantize(a.model, a.w_bits, a.a_bits, a.calib, a.seed, a.observer, device=a.device,
                              precision=a.precision, compile=a.compile, sites=a.sites, headless=a.headless,
                              v2_discrepancy=a.v2_discrepancy, params_path=a.params)
            cancel.work_done()  # recorded FINISHED: a signal while the server stops is not an interruption
        print(point_summary(params.model.name, record))
        return 0

    return run_entry(run, a.debug)


if __name__ == "__main__":
    sys.exit(main())
