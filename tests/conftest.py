"""Tiny timm models built in the tests: real architectures, small inputs, random weights."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import timm
import torch
from prefect.logging.configuration import ensure_logging_setup

from psaq.data import InputSpec
from tests import shared_prefect

# Prefect's console log handler keeps the sys.stderr of the moment Prefect sets up logging (the
# first flow or settings context of the process). Set up here, that is pytest's session-long
# capture, not the stream of a test's capsys, which closes after that test and would fail every
# later flow in the same worker.
ensure_logging_setup()

TINY_SPEC = InputSpec((3, 32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 10)


def tiny_vit(**kw):
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kw}).eval()


def tiny_deit(**kw):
    # DeiT with distillation token: two prefix tokens, two heads
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
    return timm.create_model("deit_tiny_distilled_patch16_224", **{**args, **kw}).eval()


def tiny_swin(**kw):
    args = dict(img_size=32, patch_size=2, window_size=4, embed_dim=24, depths=(2, 2), num_heads=(2, 4), num_classes=10)
    return timm.create_model("swin_tiny_patch4_window7_224", **{**args, **kw}).eval()


TINY_MODELS = {"vit": tiny_vit, "deit": tiny_deit, "swin": tiny_swin}


@pytest.fixture(params=sorted(TINY_MODELS))
def tiny_model(request):
    torch.manual_seed(0)
    return TINY_MODELS[request.param]()


@pytest.fixture
def images():
    return torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))


SHARED_ENV = "PSAQ_TEST_RUN_FOLDER"


def pytest_configure(config):
    """The process that runs the session (the xdist controller, or the only process) makes the
    folder that all processes of this run share; xdist workers inherit it through the environment."""
    if not hasattr(config, "workerinput"):
        os.environ[SHARED_ENV] = tempfile.mkdtemp(prefix="psaq-tests-")


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput") and os.environ.get(SHARED_ENV):
        folder = Path(os.environ.pop(SHARED_ENV))
        shared_prefect.stop(folder)
        shutil.rmtree(folder, ignore_errors=True)


def run_folder() -> Path:
    """Shared by every process of this test run; removed when the run ends."""
    return Path(os.environ[SHARED_ENV])


@pytest.fixture(scope="session")
def trained_digits():
    """A 2-block digits-vit trained for a few seconds: real accuracy, so parity checks mean something.
    Trained once per test run: under pytest-xdist the first worker trains and saves it, the others
    load it."""
    from filelock import FileLock
    from safetensors.torch import load_file, save_file

    from psaq.models.digits import digits_vit, train_digits_vit
    from psaq.models.train import TrainConfig

    args = {"depth": 2}
    shared = run_folder() / "trained-digits-depth2.safetensors"
    with FileLock(str(shared) + ".lock"):
        if not shared.exists():
            result = train_digits_vit(TrainConfig(seed=0, epochs=20, warmup_epochs=1, lr=3e-3), progress=False,
                                      model_args=args)
            assert result.test_top1 > 80, result.test_top1
            save_file(result.model.state_dict(), str(shared))
    model = digits_vit(**args)
    model.load_state_dict(load_file(str(shared)))
    return model.eval()
