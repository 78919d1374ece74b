"""Serve the deployments from this process, or register them on a work pool (``--pool``).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve
    prefect deployment run 'quantize/quantize' -p model=digits-vit -p w_bits=4 --watch
    prefect deployment run 'benchmark/default'           # the make-run grid on demand
    prefect deployment run 'benchmark/fashion-vit'       # one model of the Fashion-MNIST benchmark
    PREFECT_API_URL=… python -m flows.serve --pool psaq  # the same on a work pool (make worker)

``benchmark/fashion-vit`` and ``benchmark/fashion-swin`` carry a cron schedule: the scheduled
regeneration of the Fashion-MNIST benchmark, staggered (default Mondays 03:00 and 06:00 UTC;
``PSAQ_BENCHMARK_CRON``, ``PSAQ_BENCHMARK_CRON_SWIN`` and ``PSAQ_BENCHMARK_TZ`` change them), with
``recheck: true``: every evaluation is computed again and compared with the stored one. Each
deployment has a concurrency limit of one (later runs wait as AwaitingConcurrencySlot), and every
run holds the one slot of the global ``psaq-cores`` limit, which this command creates, so runs of
different deployments never share the cores either. Deployment parameters are checked against
their types and allowed values before a run starts; a run ends with its result (or the one-line
reason it failed) as its state message.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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


def one_slot():
    """Declared on each deployment: one run at a time, later ones queued in submission order and
    shown as AwaitingConcurrencySlot (the deployment page shows "Concurrency Limit: 1")."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def _specs(params: str) -> list[tuple[str, str, str, str | None, str]]:
    """(entrypoint, name, params file, cron or None, description) of every deployment."""
    out = [("flows/quantize.py:quantize", "quantize", params, None,
            "One model × bits × calibration mode × seed; unset parameters come from params.yaml."),
           ("flows/benchmark.py:benchmark", "default", params, None,
            "The params.yaml grid (what `make run` runs) and its report.")]
    for name, (path, cron) in SCHEDULED.items():
        out.append(("flows/benchmark.py:benchmark", name, path, cron,
                    f"The Fashion-MNIST benchmark for {name}, regenerated on a schedule ({cron} {BENCHMARK_TZ}): "
                    f"report in reports/{name}/, compared with the committed results (changes.md), runs in MLflow."))
    return out


def _options(path: str, cron: str | None) -> dict:
    from prefect.schedules import Cron

    options = {"parameters": {"params_path": str(Path(path).resolve())}, "enforce_parameter_schema": True,
               "concurrency_limit": one_slot()}
    if cron:  # a scheduled run evaluates again even when nothing changed, so a dependency's drift shows
        options["schedule"] = Cron(cron, timezone=BENCHMARK_TZ)
        options["parameters"]["recheck"] = True
    return options


def deployments(params: str = "params.yaml"):
    """The deployments `serve` runs in this process."""
    from flows.benchmark import benchmark
    from flows.quantize import quantize

    flows = {"flows/quantize.py:quantize": quantize, "flows/benchmark.py:benchmark": benchmark}
    return [flows[entry].to_deployment(name=name, description=description, **_options(path, cron))
            for entry, name, path, cron, description in _specs(params)]


def deploy_to_pool(pool: str, params: str = "params.yaml") -> list[str]:
    """The same deployments on a process work pool, whose worker (``prefect worker start --pool
    POOL``, e.g. under systemd) runs them and their schedules without this process. The pool
    has no limit of its own: a pool limit keeps later runs Scheduled, then Late, where each
    deployment's limit shows them AwaitingConcurrencySlot, in order. Returns the names."""
    from prefect import Flow, get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from tasks.settings import PACKAGE_ROOT

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    names = []
    for entry, name, path, cron, description in _specs(params):
        flow = Flow.from_source(source=str(PACKAGE_ROOT), entrypoint=entry)
        with contextlib.redirect_stdout(io.StringIO()):  # Prefect's table per deployment; one line each below
            flow.deploy(name=name, work_pool_name=pool, description=description, print_next_steps=False,
                        ignore_warnings=True, **_options(path, cron))
        names.append(f"{flow.name}/{name}")
    return names


def main(argv: list[str] | None = None) -> int:
    from psaq.cli import run_entry
    from tasks.services import check_prefect

    ap = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml", help="settings of the quantize and default deployments")
    ap.add_argument("--pool", help="register the deployments on this process work pool (created if missing) and "
                                   "exit; a worker runs them: prefect worker start --pool NAME (make worker)")
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
        if args.pool:
            for name in deploy_to_pool(args.pool, args.params):
                print(f"deployed {name} on work pool '{args.pool}'")
            print(f"start its worker: make worker (prefect worker start --pool {args.pool})")
            return 0
        serve(*deployments(args.params))
        return 0

    return run_entry(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
