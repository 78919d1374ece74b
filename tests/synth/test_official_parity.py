"""psaq's synthesis against the official PSAQ-ViT code (zkkli/PSAQ-ViT, d2c726f).

The entropy is checked against values the official code itself computed (a reference file
beside the repository, never skipped); the TV prior, the learning-rate schedule, the jitter
and the whole optimization loop against the official formulas written out here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from psaq.synth import SynthesisConfig, synthesize
from psaq.synth.entropy import block_entropies
from psaq.synth.hooks import AttentionOutputHooks, Captured
from psaq.synth.priors import apply_jitter, draw_jitter, scaled_jitter, total_variation, tv_target_scale, warmup_cosine_lr
from tests.tiny import TINY_SPEC, tiny_deit, tiny_swin, tiny_vit
from tests.reference import load_reference


def psaq_layout(official: torch.Tensor) -> torch.Tensor:
    """(rows, heads, N, d), the official hook's layout → (rows, N, heads·d), what psaq's hook sees."""
    rows, heads, n, d = official.shape
    return official.transpose(1, 2).reshape(rows, n, heads * d)


@pytest.mark.parametrize("case", ["deit", "digits", "swin"])
def test_entropy_equals_the_official_codes_values(case):
    f, cases = load_reference("official_entropy")
    info = cases[case]
    inputs, captured = [], []
    for b in range(info["blocks"]):
        official = f.get_tensor(f"{case}.block{b}.matmul2_out")
        x = psaq_layout(official).clone().requires_grad_(True)
        inputs.append(x)
        captured.append(Captured(f"block{b}", official.shape[1], x))
    prefix = 0 if case == "swin" else 1  # Swin has no class token; the official code drops token 0 anyway
    entropies = block_entropies(captured, info["images"], prefix)
    loss = -entropies.sum()
    loss.backward()
    assert entropies.dtype == torch.float64
    np.testing.assert_allclose(loss.item(), f.get_tensor(f"{case}.loss_entropy").item(), rtol=1e-9)
    for b, x in enumerate(inputs):
        np.testing.assert_allclose(entropies[b].item(), f.get_tensor(f"{case}.block{b}.entropy").item(), rtol=1e-9)
        want = f.get_tensor(f"{case}.block{b}.grad")
        got = x.grad.reshape(want.shape[0], want.shape[2], want.shape[1], want.shape[3]).transpose(1, 2)
        assert ((got - want).norm() / want.norm()).item() < 1e-7
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7 * want.abs().max().item())


def test_the_unique_pairs_variant_is_really_another_estimator():
    """The named option must not be the default under another name: its gradient points elsewhere."""
    f, cases = load_reference("official_entropy")
    x = psaq_layout(f.get_tensor("swin.block0.matmul2_out")).clone().requires_grad_(True)
    block_entropies([Captured("b", 3, x)], cases["swin"]["images"], 0, "unique-pairs").sum().backward()
    want = f.get_tensor("swin.block0.grad").transpose(1, 2).reshape(x.shape)
    cosine = F.cosine_similarity(x.grad.flatten(), -want.flatten(), dim=0).item()
    assert abs(cosine) < 0.5


# --- the official formulas, written out as generate_data.py has them ----------------------------


def official_tv(x: np.ndarray) -> float:
    d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
    d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
    d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    return sum(float(np.linalg.norm(d.ravel())) for d in (d1, d2, d3, d4))


def official_lr(base_lr: float, warmup: int, epochs: int, itr: int) -> float:
    if itr < warmup:
        return base_lr * (itr + 1) / warmup
    return 0.5 * (1 + np.cos(np.pi * (itr - warmup) / (epochs - warmup))) * base_lr


def official_entropy_loss(features: list[torch.Tensor], batch: int) -> torch.Tensor:
    """The loop body's entropy term: features in the official (B·windows, heads, N, d) layout."""
    loss = 0
    for attention in features:
        attention_p = attention.mean(dim=1)[:, 1:, :]
        sims = torch.cosine_similarity(attention_p.unsqueeze(1), attention_p.unsqueeze(2), dim=3)
        train = sims.view(batch, -1)
        x_plot = torch.linspace(sims.min().item(), sims.max().item(), steps=10, dtype=sims.dtype).repeat(batch, 1)
        var = 0.01**2
        diffs = x_plot.view(batch, 10, 1) - train.view(batch, 1, -1)
        # the official values were computed with float64 as torch's default dtype
        pdf = (1 / torch.sqrt(torch.tensor(2 * np.pi * var, dtype=sims.dtype)) * torch.exp(-diffs.pow(2) / (2 * var))).mean(dim=-1)
        pdf = pdf + 1e-4
        loss = loss - torch.trapz(-pdf * torch.log(pdf), x_plot, dim=-1).mean()
    return loss


def test_official_estimator_drops_token_0_and_no_other():
    """The official code slices ``[:, 1:, :]`` whatever the model: on a distilled DeiT the
    distillation token (token 1) stays in the similarities."""
    torch.manual_seed(0)
    model = tiny_deit().double().eval()
    assert model.num_prefix_tokens == 2
    images = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    heads = model.blocks[0].attn.num_heads
    with torch.no_grad(), AttentionOutputHooks(model) as hooks:
        model(images)
        captured = hooks.take()
    features = [c.output.reshape(*c.output.shape[:2], heads, -1).transpose(1, 2) for c in captured]
    got = -block_entropies(captured, 4, model.num_prefix_tokens).sum()
    assert got.item() == pytest.approx(official_entropy_loss(features, 4).item(), rel=1e-12)
    both_dropped = -block_entropies(captured, 4, model.num_prefix_tokens, "unique-pairs").sum()
    assert both_dropped.item() != pytest.approx(got.item(), rel=1e-3)


def test_tv_prior_is_the_official_formula():
    x = np.random.default_rng(0).normal(size=(2, 3, 7, 9))
    assert total_variation(torch.tensor(x)).item() == pytest.approx(official_tv(x), rel=1e-12)


def test_learning_rate_schedule_is_the_official_one():
    for itr in range(500):
        assert warmup_cosine_lr(itr, 500, 100, 0.2) == pytest.approx(official_lr(0.2, 100, 500, itr), rel=1e-12, abs=1e-15)


def test_jitter_is_the_official_roll_and_flip():
    x = torch.randn(2, 3, 9, 9)
    for shift, flip in ((3, False), (-4, True), (0, True)):
        want = torch.roll(x, shifts=(shift, shift), dims=(2, 3))
        want = torch.flip(want, dims=(3,)) if flip else want
        assert torch.equal(apply_jitter(x, shift, flip), want)
    g = torch.Generator().manual_seed(0)
    draws = [draw_jitter(15, 0.5, g) for _ in range(4000)]
    assert {s for s, _ in draws} == set(range(-15, 16))  # random.randint(-lim, lim): both ends included
    assert 0.45 < np.mean([f for _, f in draws]) < 0.55
    assert scaled_jitter(15, 224) == 15 and scaled_jitter(30, 224) == 30


def official_loop(model, config: SynthesisConfig, spec, fresh_adam_per_round: bool = False) -> torch.Tensor:
    """generate_data.py's loop on a small model, drawing its random numbers in psaq's order."""
    g = torch.Generator().manual_seed(config.seed)
    img = torch.randn((config.num_samples, *spec.input_size), generator=g).double()
    pred = torch.randint(0, spec.num_classes, (config.num_samples,), generator=g)
    lo_v, hi_v = 2500.0, 3000.0  # generate_data.py's own numbers, not psaq's config: a changed default fails here
    var_pred = (lo_v + (hi_v - lo_v) * float(torch.rand(1, generator=g))) * tv_target_scale(img.shape)
    img.requires_grad = True
    lr = 0.20
    optimizer = torch.optim.Adam([img], lr=lr, betas=[0.5, 0.9], eps=1e-8)
    lo, hi = spec.pixel_bounds(dtype=torch.float64)
    heads = model.blocks[0].attn.num_heads
    for lr_it in range(config.rounds):
        if fresh_adam_per_round:
            optimizer = torch.optim.Adam([img], lr=lr, betas=[0.5, 0.9], eps=1e-8)
        lim = scaled_jitter((15, 30)[lr_it], spec.input_size[-1])  # the official ±15 px, then ±30 px
        for itr in range(config.steps_per_round):
            for group in optimizer.param_groups:
                group["lr"] = official_lr(lr, config.warmup_steps, config.steps_per_round, itr)
            off, flip = draw_jitter(lim, 0.5, g)
            img_jit = torch.roll(img, shifts=(off, off), dims=(2, 3))
            if flip:
                img_jit = torch.flip(img_jit, dims=(3,))
            optimizer.zero_grad()
            with AttentionOutputHooks(model) as hooks:
                output = model(img_jit)
                features = [c.output.reshape(c.output.shape[0], c.output.shape[1], heads, -1).transpose(1, 2)
                            for c in hooks.take()]
            loss_oh = F.cross_entropy(output, pred)
            loss_tv = torch.norm(total_variation(img_jit) - var_pred)
            total = official_entropy_loss(features, config.num_samples) + 1.0 * loss_oh + 0.05 * loss_tv
            total.backward()
            optimizer.step()
            with torch.no_grad():
                img.copy_(torch.maximum(torch.minimum(img, hi), lo))
    return img.detach()


@pytest.mark.parametrize("factory", [tiny_vit, tiny_deit])
def test_synthesis_is_the_official_loop(factory):
    """Two rounds with one Adam, the schedule restarting each round: psaq's images equal the
    official loop's up to rounding (float64 throughout), and a fresh Adam per round is told apart.
    On the distilled DeiT (two prefix tokens) the official code drops token 0 only."""
    torch.manual_seed(0)
    model = factory().double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = SynthesisConfig(num_samples=4, steps_per_round=4, warmup_steps=2)
    got = synthesize(model, cfg, TINY_SPEC, "cpu", progress=False).images
    want = official_loop(model, cfg, TINY_SPEC)
    other = official_loop(model, cfg, TINY_SPEC, fresh_adam_per_round=True)
    assert (got.double() - want).abs().max().item() < 1e-6  # psaq returns float32 images
    assert (other - want).abs().max().item() > 1e-2


def test_the_library_defaults_are_the_official_code_s_numbers():
    """Written out here, not read from psaq: a changed default fails this test rather than moving
    both sides of a parity check."""
    from psaq.quant import QuantConfig

    c = SynthesisConfig()
    assert (c.method, c.num_samples, c.rounds, c.steps_per_round, c.warmup) == ("psaq", 32, 2, 500, 100)
    assert (c.lr, c.betas, c.adam_eps) == (None, (0.5, 0.9), 1e-8)  # None: 0.20 ViT/DeiT, 0.25 Swin
    assert (c.entropy_weight, c.ce_weight, c.tv_weight, c.tv_target_range) == (1.0, 1.0, 0.05, (2500.0, 3000.0))
    assert (c.jitter_px, c.jitter, c.flip_prob) == (None, (15, 30), 0.5)
    # shorter or fewer rounds keep the official offsets and warm-up fraction instead of being refused
    assert SynthesisConfig(rounds=1).jitter == (15,) and SynthesisConfig(rounds=3).jitter == (15, 30, 30)
    assert SynthesisConfig(steps_per_round=50).warmup == 10 and SynthesisConfig(steps_per_round=4).warmup == 0
    assert (c.kde_bandwidth, c.kde_points, c.kde_eps, c.entropy_estimator) == (0.01, 10, 1e-4, "official")
    assert (c.precision, c.compile, c.cuda_graphs) == ("fp32", "none", False)
    q = QuantConfig()
    assert (q.w_bits, q.a_bits, q.act_observer, q.weight_observer, q.sites) == (8, 8, "minmax", "minmax", "official")
    assert q.calibrate_with_quantized_weights is False


def test_swin_learning_rate_is_the_official_one():
    from psaq.synth.optimize import default_lr

    assert default_lr(tiny_swin()) == 0.25 and default_lr(tiny_vit()) == 0.20
    assert math.isclose(tv_target_scale((32, 3, 224, 224)), 1.0)
