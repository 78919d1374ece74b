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


def tiny_beit(**kw):
    # per-block relative-position bias, q/v biases outside the qkv linear, layer scale (gamma)
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10, init_values=0.1,
                head_init_scale=1.0)
    model = timm.create_model("beit_base_patch16_224", **{**args, **kw}).eval()
    with torch.no_grad():  # timm starts the q/v biases at zero and the bias table near it: make them count
        for block in model.blocks:
            for p in (block.attn.q_bias, block.attn.v_bias, block.attn.relative_position_bias_table):
                if p is not None:
                    p.normal_(std=0.5)
    return model


TINY_MODELS = {"vit": tiny_vit, "deit": tiny_deit, "swin": tiny_swin, "beit": tiny_beit}


@pytest.fixture(params=sorted(TINY_MODELS))
def tiny_model(request):
    """Each tiny model in turn, seeded; a test module that wants it imports it from here."""
    torch.manual_seed(0)
    return TINY_MODELS[request.param]()
