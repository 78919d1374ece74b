"""Serve the deployments from this process (needs a Prefect server, e.g. `make prefect-server`).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve
    prefect deployment run 'quantize/quantize' -p model=digits-vit -p w_bits=4
    prefect deployment run 'benchmark/benchmark'

``benchmark`` carries a cron schedule: the scheduled regeneration of the benchmark
(default Mondays 03:00; ``PSAQ_BENCHMARK_CRON`` overrides).
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import serve

from flows.benchmark import benchmark
from flows.quantize import quantize

BENCHMARK_CRON = os.environ.get("PSAQ_BENCHMARK_CRON", "0 3 * * 1")


def deployments():
    params = str(Path("params.yaml").resolve())
    return [
        quantize.to_deployment(name="quantize", parameters={"params_path": params},
                               description="One model × bits × calibration mode × seed."),
        benchmark.to_deployment(name="benchmark", cron=BENCHMARK_CRON, parameters={"params_path": params},
                                description="The params.yaml grid and its report, regenerated on a schedule."),
    ]


if __name__ == "__main__":
    serve(*deployments())
