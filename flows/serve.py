"""Serve the deployments from this process (needs a Prefect server, e.g. `make prefect-server`).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve
    prefect deployment run 'quantize/quantize' -p model=digits-vit -p w_bits=4 --watch
    prefect deployment run 'benchmark/digits'            # the make-run grid on demand
    prefect deployment run 'benchmark/fashion-vit'       # one model of the Fashion-MNIST benchmark

``benchmark/fashion-vit`` and ``benchmark/fashion-swin`` carry a cron schedule: the scheduled
regeneration of the Fashion-MNIST benchmark, staggered (default Mondays 03:00 and 06:00 UTC;
``PSAQ_BENCHMARK_CRON``, ``PSAQ_BENCHMARK_CRON_SWIN`` and ``PSAQ_BENCHMARK_TZ`` change them). Every
deployment run holds the one slot of the ``psaq-cores`` concurrency limit, which this command
creates, so runs never share the cores: a run started while another holds it waits. Deployment
parameters are checked against their types and allowed values before a run starts; a run ends
with its result (or the one-line reason it failed) as its state message.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from psaq.cli import ArgumentParser

BENCHMARK_TZ = os.environ.get("PSAQ_BENCHMARK_TZ", "UTC")

# name → (params file, cron): three hours apart, more than a cold fashion-vit run takes here
SCHEDULED = {
    "fashion-vit": ("benchmarks/fashion-vit.yaml", os.environ.get("PSAQ_BENCHMARK_CRON", "0 3 * * 1")),
    "fashion-swin": ("benchmarks/fashion-swin.yaml", os.environ.get("PSAQ_BENCHMARK_CRON_SWIN", "0 6 * * 1")),
}


def deployments(params: str = "params.yaml"):
    from prefect.schedules import Cron

    from flows.benchmark import benchmark
    from flows.quantize import quantize

    out = [
        quantize.to_deployment(name="quantize", parameters={"params_path": str(Path(params).resolve())},
                               description="One model × bits × calibration mode × seed; unset parameters come from "
                                           "params.yaml.", enforce_parameter_schema=True),
        benchmark.to_deployment(name="digits", parameters={"params_path": str(Path(params).resolve())},
                                description="The params.yaml grid (what `make run` runs) and its report.",
                                enforce_parameter_schema=True),
    ]
    for name, (path, cron) in SCHEDULED.items():
        out.append(benchmark.to_deployment(
            name=name, schedule=Cron(cron, timezone=BENCHMARK_TZ),
            parameters={"params_path": str(Path(path).resolve())}, enforce_parameter_schema=True,
            description=f"The Fashion-MNIST benchmark for {name}, regenerated on a schedule ({cron} "
                        f"{BENCHMARK_TZ}): report in reports/{name}/, runs in MLflow."))
    return out


def main(argv: list[str] | None = None) -> int:
    from psaq.cli import run_entry
    from tasks.services import check_prefect

    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="settings of the quantize and digits deployments")
    ap.add_argument("--debug", action="store_true")
    args = ap.parse_args(argv)

    def run() -> int:
        from prefect import serve
        from prefect.settings import PREFECT_API_URL

        from flows.one_at_a_time import create_limit
        from psaq.errors import ConfigError

        if not PREFECT_API_URL.value():
            raise ConfigError("serving deployments needs a Prefect server: start one (make prefect-server) and set "
                              "PREFECT_API_URL=http://127.0.0.1:4200/api (make serve does)")
        check_prefect()
        create_limit()
        serve(*deployments(args.params))
        return 0

    return run_entry(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
