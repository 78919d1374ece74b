"""Tiny timm models built in the tests: real architectures, small inputs, random weights."""

import os

import pytest
import timm
import torch

from psaq.data import InputSpec

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


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
    """A 2-block digits-vit trained for a few seconds: real accuracy, so parity checks mean something.
    Trained once per test run: under pytest-xdist the first worker trains and saves it, the others
    load it (the base temporary folder's parent is shared by the workers of one run)."""
    from filelock import FileLock
    from safetensors.torch import load_file, save_file

    from psaq.models.digits import digits_vit, train_digits_vit
    from psaq.models.train import TrainConfig

    args = {"depth": 2}
    base = tmp_path_factory.getbasetemp()
    run_folder = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: .../pytest-N/popen-gwK
    shared = run_folder / "trained-digits-depth2.safetensors"
    with FileLock(str(shared) + ".lock"):
        if not shared.exists():
            result = train_digits_vit(TrainConfig(seed=0, epochs=20, warmup_epochs=1, lr=3e-3), progress=False,
                                      model_args=args)
            assert result.test_top1 > 80, result.test_top1
            save_file(result.model.state_dict(), str(shared))
    model = digits_vit(**args)
    model.load_state_dict(load_file(str(shared)))
    return model.eval()
