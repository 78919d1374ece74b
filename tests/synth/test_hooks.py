import pytest
import torch

from psaq.synth.hooks import AttentionOutputHooks
from tests.tiny import tiny_model  # noqa: F401  (the fixture)


def explicit_attention_output(attn, x):
    """softmax(q·kᵀ)·v written out, to check what the hook captures."""
    B, N, C = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    a = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1)
    return (a @ v).transpose(1, 2).reshape(B, N, C)


def test_hook_captures_softmax_qk_v_on_fused_and_explicit_paths(images):
    from tests.tiny import tiny_vit

    model = tiny_vit()
    block = model.blocks[0]
    captured = {}
    for fused in (True, False):
        block.attn.fused_attn = fused
        with AttentionOutputHooks(model) as hooks:
            with torch.no_grad():
                tokens = model.patch_embed(images)
                tokens = model._pos_embed(tokens)
                model(images)
            captured[fused] = hooks.take()
        expected = explicit_attention_output(block.attn, block.norm1(tokens))
        torch.testing.assert_close(captured[fused][0].output, expected, atol=1e-5, rtol=1e-4)
    assert len(captured[True]) == len(model.blocks)


def test_hooks_cover_every_block(tiny_model, images):
    with AttentionOutputHooks(tiny_model) as hooks:
        tiny_model(images)
        assert len(hooks.take()) >= 2
    # removed on exit
    tiny_model(images)
    assert hooks.captured == []


def test_model_without_attention_is_refused():
    with pytest.raises(ValueError, match="no timm attention"):
        AttentionOutputHooks(torch.nn.Linear(2, 2))
