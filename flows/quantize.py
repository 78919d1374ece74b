"""``quantize``: one model × bit setting × calibration mode × seed, through every stage.

    python -m flows.quantize --model digits-vit --w-bits 4 --a-bits 8 --calib psaq --seed 0

Values not given come from params.yaml. As a deployment it takes the same parameters:
    prefect deployment run 'quantize/quantize' -p model=digits-vit -p w_bits=4
    prefect deployment run 'quantize/quantize' -p device=cuda -p precision=bf16 -p compile=all
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from prefect import flow

from psaq.cli import run_entry
from flows.grid import preflight, run_points, tracked
from flows.points import Point
from tasks.params import load_params


@flow(name="quantize", log_prints=True)
def quantize(model: str | None = None, w_bits: int | None = None, a_bits: int | None = None,
             calib: str | None = None, seed: int | None = None, observer: str | None = None,
             train_seed: int | None = None, device: str | None = None, precision: str | None = None,
             compile: str | None = None, params_path: str = "params.yaml") -> dict:
    params = load_params(params_path)
    speed = {k: v for k, v in (("precision", precision), ("compile", compile)) if v is not None}
    params = dataclasses.replace(
        params, synthesis=dataclasses.replace(params.synthesis, **speed),
        runtime=dataclasses.replace(params.runtime, device=device or params.runtime.device))
    p_model = dataclasses.replace(params.model, name=model or params.model.name)
    quant = dataclasses.replace(params.quant, w_bits=params.quant.w_bits if w_bits is None else w_bits,
                                a_bits=params.quant.a_bits if a_bits is None else a_bits,
                                act_observer=observer or params.quant.act_observer)
    params = dataclasses.replace(params, model=p_model, quant=quant)
    point = Point(params.model.train_seed if train_seed is None else train_seed, calib or params.synthesis.method,
                  params.synthesis.seed if seed is None else seed, quant.tag, quant.act_observer)
    with tracked(params, f"quantize {point.name}") as parent:
        [record] = run_points(params, [point], parent)
    print(f"{params.model.name} {point.method} seed {point.seed}: FP32 top-1 {record['fp32_top1']:.2f}, "
          f"{point.bits} top-1 {record['top1']:.2f}, agreement {record['agreement']:.2f}")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--w-bits", type=int)
    ap.add_argument("--a-bits", type=int)
    ap.add_argument("--calib")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--observer")
    ap.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: params.yaml runtime.device)")
    ap.add_argument("--precision", help="synthesis autocast: fp32 or bf16 (default: params.yaml)")
    ap.add_argument("--compile", help="synthesis torch.compile: none, kde, model, all (default: params.yaml)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    a = ap.parse_args(argv)

    def run() -> int:
        preflight(load_params(a.params))
        quantize(a.model, a.w_bits, a.a_bits, a.calib, a.seed, a.observer, device=a.device, precision=a.precision,
                 compile=a.compile, params_path=a.params)
        return 0

    return run_entry(run, a.debug)


if __name__ == "__main__":
    sys.exit(main())
