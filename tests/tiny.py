"""Tiny timm models built in the tests: real architectures, small inputs, random weights."""

import pytest
import timm
import torch

import psaq.families.builtin  # noqa: F401 - the tests quantize and hook these families
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
    """Each tiny model in turn, seeded; a test module that wants it imports it from here."""
    torch.manual_seed(0)
    return TINY_MODELS[request.param]()
