"""Synthesis speed options: bf16 autocast, compiled KDE/model, CUDA graphs, and the device-side loss log."""

import pytest
import torch

from psaq.errors import ConfigError, SynthesisDivergedError, UnknownNameError
from psaq.synth import SynthesisConfig, synthesize
from psaq.synth.entropy import block_entropies
from psaq.synth.hooks import AttentionOutputHooks, Captured
from psaq.synth.kde import kde_entropy
from psaq.synth.optimize import _check_finite
from tests.tiny import TINY_SPEC, tiny_vit

FAST = dict(num_samples=8, steps_per_round=12, warmup_steps=2)


@pytest.mark.parametrize("bad,message", [
    (dict(precision="fp8"), "unknown synthesis precision 'fp8'"),
    (dict(compile="everything"), "unknown compile target 'everything'"),
    (dict(cuda_graphs=True), "set compile to kde, model or all"),
    (dict(cuda_graphs="yes", compile="all"), "cuda_graphs must be true or false"),
])
def test_bad_speed_options_are_refused(bad, message):
    with pytest.raises((ConfigError, UnknownNameError), match=message):
        SynthesisConfig(**bad)


def test_cuda_graphs_on_the_cpu_is_refused_before_any_step():
    cfg = SynthesisConfig(compile="kde", cuda_graphs=True, **FAST)
    with pytest.raises(ConfigError, match="cuda_graphs needs a CUDA device, but synthesis runs on cpu"):
        synthesize(tiny_vit(), cfg, TINY_SPEC, "cpu", progress=False)


def test_bf16_captures_get_a_float32_entropy():
    """A bf16 forward's attention outputs are upcast before the KDE: the same result as
    computing on the upcast tensors by hand, and float32 out."""
    torch.manual_seed(0)
    model = tiny_vit().eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), AttentionOutputHooks(model) as hooks, torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
        captured = hooks.take()
    assert all(c.output.dtype == torch.bfloat16 for c in captured)
    got = block_entropies(captured, 4, 1)
    upcast = [Captured(c.name, c.num_heads, c.output.float()) for c in captured]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, block_entropies(upcast, 4, 1), rtol=0, atol=0)


def test_bf16_synthesis_optimizes_like_fp32():
    torch.manual_seed(0)
    model = tiny_vit()
    fp32 = synthesize(model, SynthesisConfig(**FAST), TINY_SPEC, "cpu", progress=False)
    bf16 = synthesize(model, SynthesisConfig(precision="bf16", **FAST), TINY_SPEC, "cpu", progress=False)
    assert bf16.images.dtype == torch.float32 and torch.isfinite(bf16.images).all()
    assert not torch.equal(bf16.images, fp32.images)  # autocast really ran
    h = bf16.history
    assert sum(h["loss"][-3:]) < sum(h["loss"][:3])
    # the first step sees the same images: the loss terms differ only by bf16 rounding
    assert h["entropy"][0] == pytest.approx(fp32.history["entropy"][0], rel=0.05, abs=0.05)
    assert h["ce"][0] == pytest.approx(fp32.history["ce"][0], rel=0.05)


@pytest.mark.cost(25)
def test_compiled_kde_matches_the_float64_reference_as_closely_as_eager():
    """Fusion reorders the float32 sums; both must stay within float32 rounding of float64."""
    torch.manual_seed(0)
    samples = (torch.rand(6, 300) * 1.5 - 0.5).requires_grad_(True)
    wide = samples.detach().double().requires_grad_(True)
    reference = kde_entropy(wide)
    (reference_grad,) = torch.autograd.grad(reference.sum(), wide)
    grad_tol = 1e-4 * reference_grad.abs().max().item()
    for fn in (kde_entropy, torch.compile(kde_entropy, dynamic=False)):
        value = fn(samples)
        (grad,) = torch.autograd.grad(value.sum(), samples)
        torch.testing.assert_close(value.double(), reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad.double(), reference_grad, rtol=0, atol=grad_tol)


@pytest.mark.cost(18)
@pytest.mark.slow
def test_compiled_synthesis_follows_the_eager_one():
    torch.manual_seed(0)
    model = tiny_vit()
    eager = synthesize(model, SynthesisConfig(**FAST), TINY_SPEC, "cpu", progress=False)
    compiled = synthesize(model, SynthesisConfig(compile="all", **FAST), TINY_SPEC, "cpu", progress=False)
    assert compiled.steps == eager.steps == 24
    for term in ("entropy", "ce", "tv"):
        assert compiled.history[term][0] == pytest.approx(eager.history[term][0], rel=1e-4, abs=1e-5)
    assert (compiled.images - eager.images).abs().max() < 0.05


def test_history_is_complete_when_steps_are_not_a_multiple_of_the_read_interval():
    result = synthesize(tiny_vit(), SynthesisConfig(num_samples=4, rounds=2, steps_per_round=7, warmup_steps=1,
                                                    jitter_px=(15, 30)), TINY_SPEC, "cpu", progress=False)
    assert result.steps == 14
    assert all(len(result.history[k]) == 14 for k in ("loss", "entropy", "ce", "tv", "lr"))


def test_divergence_check_names_the_first_bad_step_and_the_term_not_the_total():
    values = torch.zeros(10, 4)
    values[6, 0] = float("nan")  # loss
    values[6, 3] = float("inf")  # tv
    values[8, 2] = float("nan")
    with pytest.raises(SynthesisDivergedError, match="step 26: loss term 'total-variation' is inf"):
        _check_finite(20, values)
    _check_finite(0, torch.zeros(3, 4))


def test_a_compiler_failure_is_one_line_with_the_way_out(monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    from psaq.errors import CompileError
    from psaq.synth import acceleration

    def broken(*_args, **_kwargs):
        raise BackendCompilerFailed(lambda: None, RuntimeError("no C++ compiler found"), None)

    monkeypatch.setattr(acceleration.torch, "compile", lambda fn, **_: broken)
    with pytest.raises(CompileError, match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler found\); set compile: none"):
        synthesize(tiny_vit(), SynthesisConfig(compile="kde", **FAST), TINY_SPEC, "cpu", progress=False)
    assert not acceleration.COMPILE_LOCK.locked()  # released on failure: the next synthesis can compile
