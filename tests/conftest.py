"""Fixtures and the test run's shared folder. Kept free of heavy imports: the pytest-xdist
controller loads this file before it starts the workers, so what it imports here delays them."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests import background, shared_prefect

SHARED_ENV = "PSAQ_TEST_RUN_FOLDER"


def pytest_configure(config):
    """The process that runs the session (the xdist controller, or the only process) makes the
    folder that all processes of this run share; xdist workers inherit it through the environment."""
    if not hasattr(config, "workerinput"):
        os.environ[SHARED_ENV] = tempfile.mkdtemp(prefix="psaq-tests-")


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput") and os.environ.get(SHARED_ENV):
        folder = Path(os.environ.pop(SHARED_ENV))
        background.stop_all(folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(trylast=True)  # after -k/-m have deselected
def pytest_collection_modifyitems(config, items):
    """Spread the long tests over the xdist workers, longest first.

    ``--dist worksteal`` hands worker k the k-th contiguous share of the collection and lets an
    idle worker take the tail of another's queue. Collected in file order, the long flow tests
    would all land in the first share and finish one after another. Here each share gets an equal
    load of long tests (``cost`` marks, rough seconds on 2 cores; other slow tests count 5),
    longest first, then short tests to fill it; the short tails are what idle workers take.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or len(items) < workers:
        return

    def cost(item) -> float:
        mark = item.get_closest_marker("cost")
        return mark.args[0] if mark else 5.0 if item.get_closest_marker("slow") else 0.0

    long = sorted((i for i in items if cost(i) > 0), key=cost, reverse=True)
    short = [i for i in items if cost(i) == 0]
    shares, loads = [[] for _ in range(workers)], [0.0] * workers
    for item in long:
        k = loads.index(min(loads))
        shares[k].append(item)
        loads[k] += cost(item)
    size = len(items) // workers
    for k, share in enumerate(shares):
        fill = (len(items) - sum(map(len, shares))) if k == workers - 1 else max(0, size - len(share))
        share.extend(short[:fill])
        del short[:fill]
    items[:] = [i for share in shares for i in share] + short


def pytest_collection_finish(session):
    """Launch what the collected tests will need once per run: it starts while other tests run."""
    needed = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    if "prefect_server" in needed:
        shared_prefect.start(run_folder())
    if "trained_digits" in needed:
        _launch_trained_digits()


def run_folder() -> Path:
    """Shared by every process of this test run; removed when the run ends."""
    return Path(os.environ[SHARED_ENV])


@pytest.fixture(scope="session", autouse=True)
def _prefect_logging():
    """Prefect's console log handler keeps the sys.stderr of the moment Prefect sets up logging
    (the first flow or settings context of the process). Set up here, before any test, that is
    pytest's session-long capture, not the stream of a test's capsys, which closes after that test
    and would fail every later flow in the same process."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()


@pytest.fixture
def images():
    import torch

    return torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _trained_digits_file() -> Path:
    return run_folder() / "trained-digits.safetensors"


def _launch_trained_digits() -> dict:
    return background.launch(run_folder(), "trained-digits", background.python("-m", "tests.trained_digits",
                             str(_trained_digits_file())), cwd=Path(__file__).resolve().parents[1])


@pytest.fixture(scope="session")
def trained_digits():
    """A 2-block digits-vit trained for a few seconds: real accuracy, so parity checks mean something.
    Trained once per test run, in the background from collection on (tests/trained_digits.py)."""
    from safetensors.torch import load_file

    from psaq.models.digits import digits_vit
    from tests.trained_digits import MODEL_ARGS

    background.wait(_launch_trained_digits(), _trained_digits_file().exists, "training the test digits-vit")
    model = digits_vit(**MODEL_ARGS)
    model.load_state_dict(load_file(str(_trained_digits_file())))
    return model.eval()
