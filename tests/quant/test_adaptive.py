"""PSAQ-ViT V2's teacher-student loop: (a) raises the discrepancy, (b) lowers it, the student ends on its grid."""

import copy
import dataclasses
import warnings

import pytest
import torch

from psaq.datasets.digits import DIGITS_SPEC
from psaq.errors import ConfigError
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.quant.adaptive import AdaptiveConfig, adapt, discrepancy, feature_discrepancy, measure
from psaq.quant.layers import QuantConv2d, QuantLinear
from psaq.quant.quantizers import ActQuantizer
from psaq.synth import SynthesisConfig
from tests.tiny import TINY_SPEC, tiny_swin

# no views: (a) and (b) then optimise exactly what ``measure`` measures
STILL = dict(jitter_px=(0, 0), flip_prob=0.0)


@pytest.fixture(scope="module")
def pair(trained_digits):
    torch.manual_seed(0)
    images = DIGITS_SPEC_noise(16)
    student = calibrate(quantize_(copy.deepcopy(trained_digits), QuantConfig(w_bits=4, a_bits=4)), images)
    return trained_digits, student, images


def DIGITS_SPEC_noise(n):
    lo, hi = DIGITS_SPEC.pixel_bounds()
    return torch.maximum(torch.minimum(torch.randn(n, *DIGITS_SPEC.input_size), hi), lo)


def test_discrepancy_is_the_kl_divergence_of_the_teacher_from_the_student():
    t, s = torch.randn(5, 10, dtype=torch.float64), torch.randn(5, 10, dtype=torch.float64)
    p, q = t.softmax(-1), s.softmax(-1)
    want = (p * (p.log() - q.log())).sum(-1).mean()
    torch.testing.assert_close(discrepancy(t, s).double(), want, atol=1e-6, rtol=0)
    pt, qt = (t / 2).softmax(-1), (s / 2).softmax(-1)
    torch.testing.assert_close(discrepancy(t, s, 2.0).double(), (pt * (pt.log() - qt.log())).sum(-1).mean(),
                               atol=1e-6, rtol=0)
    assert discrepancy(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_each_round_the_samples_raise_and_the_student_lowers_the_discrepancy(trained_digits):
    # (a) ascends the KL through the student's straight-through gradients: with 8-bit activations
    # and small steps that is the true KL's ascent too (at 4 bits a step can cross quantization
    # levels the gradient does not see). (b) here learns the weights only: learning the activation
    # scales at the default rate can raise the KL in a round (the README gives how often)
    teacher = trained_digits
    torch.manual_seed(0)
    images = DIGITS_SPEC_noise(16)
    student = calibrate(quantize_(copy.deepcopy(teacher), QuantConfig(w_bits=4, a_bits=8)), images)
    synth = SynthesisConfig(entropy_weight=0.0, tv_weight=0.0, **STILL)  # (a): the discrepancy alone
    cfg = AdaptiveConfig(rounds=2, sample_steps=5, student_steps=20, sample_lr=0.002, student="weights", holdout=0)
    _, h = adapt(student, teacher, images, synth, cfg, DIGITS_SPEC, progress=False)
    for r in range(2):
        assert h["discrepancy_after_samples"][r] > h["discrepancy_start"][r], r
        assert h["discrepancy_after_student"][r] < h["discrepancy_after_samples"][r], r
    assert len(h["entropy"]) == 2 and h["wall_s"][0] > 0


def test_the_student_gets_gradients_through_every_quantizer_log2_included(pair):
    teacher, _, images = pair
    student = calibrate(quantize_(copy.deepcopy(teacher), QuantConfig(w_bits=4, a_bits=4, sites="repq")), images)
    adapt(student, teacher, images, SynthesisConfig(**STILL), AdaptiveConfig(rounds=1, sample_steps=1,
          student_steps=1, student="weights"), DIGITS_SPEC, progress=False)
    from psaq.quant.adaptive import _student_parameters
    with _student_parameters(student, "weights") as (latents, _):
        for lw in latents:
            lw.latent.requires_grad_(True)
        discrepancy(teacher(images), student(images)).backward()
        qkv = [lw for lw in latents if lw.layer is student.blocks[0].inner.attn.inner.qkv][0]
        q_and_k = qkv.latent.grad[: 2 * qkv.latent.shape[1]]  # reached only through the log2 probabilities
        assert q_and_k.abs().sum() > 0
    assert not any(m.straight_through for m in student.modules() if isinstance(m, ActQuantizer))


def test_with_the_entropy_prior_the_student_still_learns_its_samples(pair):
    teacher, calibrated, images = pair
    student = copy.deepcopy(calibrated)
    out, h = adapt(student, teacher, images, SynthesisConfig(**STILL), AdaptiveConfig(rounds=2, sample_steps=5,
                   student_steps=20, holdout=0), DIGITS_SPEC, progress=False)
    assert all(b < a for a, b in zip(h["discrepancy_after_samples"], h["discrepancy_after_student"]))
    assert out.shape == images.shape and not torch.equal(out, images)
    lo, hi = DIGITS_SPEC.pixel_bounds()
    assert (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all()


@pytest.mark.parametrize("student_parts", ["weights+scales", "weights", "scales"])
def test_the_student_ends_on_its_grid_with_frozen_scales(pair, student_parts):
    teacher, calibrated, images = pair
    student = copy.deepcopy(calibrated)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    scales = {n: m.scale.clone() for n, m in student.named_modules() if isinstance(m, ActQuantizer)}
    adapt(student, teacher, images, SynthesisConfig(**STILL),
          AdaptiveConfig(rounds=1, sample_steps=2, student_steps=30, weight_lr=1e-3, student=student_parts),
          DIGITS_SPEC, progress=False)
    moved_weights = moved_scales = False
    for name, m in student.named_modules():
        if isinstance(m, (QuantLinear, QuantConv2d)):
            wq = m.weight_quantizer
            assert wq.soft_rounding is None
            w = m.weight.detach()
            on_grid = (wq.integers(w) - wq.zero_point) * wq.scale
            torch.testing.assert_close(wq(w), on_grid, atol=1e-7, rtol=0)
            if student_parts != "scales":  # learned weights are stored as the grid values the forward uses
                torch.testing.assert_close(w, on_grid, atol=1e-7, rtol=0)
            moved_weights |= not torch.equal(w, before[f"{name}.{'linear' if isinstance(m, QuantLinear) else 'conv'}.weight"])
        if isinstance(m, ActQuantizer):
            assert m.learned_scale is None and bool(m.calibrated)
            moved_scales |= not torch.equal(m.scale, scales[name])
    assert moved_weights == (student_parts != "scales")
    assert moved_scales == (student_parts != "weights")
    assert not any(p.requires_grad is False and before[n].requires_grad for n, p in student.named_parameters())


def test_the_teacher_is_left_as_it_was(pair):
    teacher, calibrated, images = pair
    state = copy.deepcopy(teacher.state_dict())
    flags = [p.requires_grad for p in teacher.parameters()]
    adapt(copy.deepcopy(calibrated), teacher, images, SynthesisConfig(**STILL), AdaptiveConfig(rounds=1, sample_steps=2,
          student_steps=2), DIGITS_SPEC, progress=False)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())
    assert [p.requires_grad for p in teacher.parameters()] == flags


def test_swin_runs_the_loop():
    torch.manual_seed(0)
    teacher = tiny_swin()
    images = torch.randn(4, 3, 32, 32)
    student = calibrate(quantize_(copy.deepcopy(teacher), QuantConfig(w_bits=4, a_bits=8)), images)
    out, h = adapt(student, teacher, images, SynthesisConfig(), AdaptiveConfig(rounds=2, sample_steps=2,
                   student_steps=2), TINY_SPEC, progress=False)
    assert out.shape == images.shape and len(h["discrepancy_after_student"]) == 2
    assert measure(teacher, student, out) >= 0


@pytest.mark.parametrize("change, message", [
    (dict(rounds=0), "adaptive.rounds must be an integer >= 1"),
    (dict(student_steps=2.5), "adaptive.student_steps must be an integer >= 1"),
    (dict(sample_steps=-1), "adaptive.sample_steps must be an integer >= 0"),
    (dict(holdout=1.0), "adaptive.holdout must be a share in \\[0, 1\\)"),
    (dict(weight_lr=0), "adaptive.weight_lr must be positive"),
    (dict(discrepancy_weight=-1), "adaptive.discrepancy_weight must be >= 0"),
    (dict(student="everything"), "adaptive.student must be one of weights\\+scales, weights, scales"),
    (dict(sample_lr=-0.1), "adaptive.sample_lr must be positive or null"),
    (dict(noise_probe=-1), "adaptive.noise_probe must be an integer >= 0"),
    (dict(noise_probe=True), "adaptive.noise_probe must be an integer >= 0"),
])
def test_bad_settings_are_one_line(change, message):
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(AdaptiveConfig(), **change)


def test_the_samples_loss_holds_the_patch_similarity_term(pair):
    """V2's samples move toward the student's errors under the patch-similarity prior: without the
    entropy term they come out elsewhere, from the same start and the same steps."""
    teacher, calibrated, images = pair
    cfg = AdaptiveConfig(rounds=1, sample_steps=5, student_steps=1)
    with_prior, _ = adapt(copy.deepcopy(calibrated), teacher, images, SynthesisConfig(**STILL), cfg, DIGITS_SPEC,
                          progress=False)
    without, _ = adapt(copy.deepcopy(calibrated), teacher, images, SynthesisConfig(**STILL, entropy_weight=0.0), cfg,
                       DIGITS_SPEC, progress=False)
    assert (with_prior - without).abs().max().item() > 1e-3


def test_the_held_out_samples_are_never_touched_and_checked_every_round(pair):
    teacher, calibrated, images = pair
    out, h = adapt(copy.deepcopy(calibrated), teacher, images, SynthesisConfig(**STILL),
                   AdaptiveConfig(rounds=2, sample_steps=3, student_steps=3), DIGITS_SPEC, progress=False)
    assert out.shape == images.shape
    assert torch.equal(out[-4:], images[-4:]) and not torch.equal(out[:-4], images[:-4])  # 25 % of 16 kept aside
    assert len(h["discrepancy_heldout"]) == 3  # before the first round, then after each
    assert h["discrepancy_heldout"][0] == pytest.approx(measure(teacher, calibrated, images[-4:]), rel=1e-6)


def test_the_noise_probe_is_synthesis_starting_noise_and_checked_every_round(pair):
    teacher, calibrated, images = pair
    cfg = AdaptiveConfig(rounds=2, sample_steps=3, student_steps=3, noise_probe=8, seed=3)
    out, h = adapt(copy.deepcopy(calibrated), teacher, images, SynthesisConfig(**STILL), cfg, DIGITS_SPEC,
                   progress=False)
    noise = torch.randn((8, *DIGITS_SPEC.input_size), generator=torch.Generator().manual_seed(3))  # N(0, 1), unclamped
    assert len(h["discrepancy_noise"]) == 3
    assert h["discrepancy_noise"][0] == pytest.approx(measure(teacher, calibrated, noise), rel=1e-6)
    # the probe draws from its own generator: the samples come out as they do without it
    without, h0 = adapt(copy.deepcopy(calibrated), teacher, images, SynthesisConfig(**STILL),
                        dataclasses.replace(cfg, noise_probe=0), DIGITS_SPEC, progress=False)
    assert torch.equal(out, without) and h0["discrepancy_noise"] == []


def test_a_student_that_ends_further_from_the_teacher_is_kept_at_its_best_and_said(pair, monkeypatch):
    teacher, calibrated, images = pair
    student = copy.deepcopy(calibrated)
    # every Adam climbs instead of descending: the student moves away from the teacher, by construction
    adam = torch.optim.Adam
    monkeypatch.setattr(torch.optim, "Adam", lambda params, **kw: adam(params, maximize=True, **kw))
    wrecking = AdaptiveConfig(rounds=2, sample_steps=1, student_steps=10, weight_lr=1e-2, scale_lr=1e-2)
    with pytest.warns(UserWarning, match="discrepancy ended above its start on held-out samples"):
        _, h = adapt(student, teacher, images, SynthesisConfig(**STILL), wrecking, DIGITS_SPEC, progress=False)
    held = h["discrepancy_heldout"]
    assert held[-1] > held[0]  # the rounds made it worse on images they did not learn from ...
    kept = int(h["kept_round"][0])
    noise = h["discrepancy_noise"]
    worst = [max(held[r] / held[0], noise[r] / noise[0]) for r in range(3)]
    assert kept < 2 and worst[kept] == min(worst)  # ... so the best round's student is handed back
    assert measure(teacher, student, images[-4:]) == pytest.approx(held[kept], rel=1e-4, abs=1e-6)


def test_a_student_that_drifts_on_noise_alone_is_kept_at_its_best_and_said(pair, monkeypatch):
    """No held-out samples: the noise probe alone catches a student moving away from the teacher."""
    teacher, calibrated, images = pair
    student = copy.deepcopy(calibrated)
    adam = torch.optim.Adam
    monkeypatch.setattr(torch.optim, "Adam", lambda params, **kw: adam(params, maximize=True, **kw))
    wrecking = AdaptiveConfig(rounds=2, sample_steps=1, student_steps=10, weight_lr=1e-2, scale_lr=1e-2, holdout=0,
                              noise_probe=8)
    with pytest.warns(UserWarning, match="discrepancy ended above its start on the noise probe") as said:
        _, h = adapt(student, teacher, images, SynthesisConfig(**STILL), wrecking, DIGITS_SPEC, progress=False)
    assert "held-out" not in str(said[0].message) and h["discrepancy_heldout"] == []
    noise = h["discrepancy_noise"]
    kept = int(h["kept_round"][0])
    assert noise[-1] > noise[0] and kept < 2 and noise[kept] == min(noise)
    probe = torch.randn((8, *DIGITS_SPEC.input_size), generator=torch.Generator().manual_seed(0))
    assert measure(teacher, student, probe) == pytest.approx(noise[kept], rel=1e-4, abs=1e-6)


def test_a_round_is_judged_by_its_worse_check_relative_to_its_start(monkeypatch):
    """A student better on the held-out samples but further from the teacher on noise is not kept
    for the first: the rule that failed on a Swin, whose held-out figure fell as test top-1 did."""
    import psaq.quant.adaptive as adaptive

    script = iter([{"heldout": 1.0, "noise": 0.5},  # before the first round
                   {"heldout": 0.5, "noise": 0.6},  # round 1: held-out halved, noise ×1.2 → 1.2
                   {"heldout": 0.8, "noise": 0.45},  # round 2: ×0.8 and ×0.9 → 0.9, the best
                   {"heldout": 0.3, "noise": 0.9}])  # round 3: held-out at its lowest, noise ×1.8
    monkeypatch.setattr(adaptive._Checks, "_measure", lambda self: next(script))
    p = torch.zeros(1)
    checks = adaptive._Checks(None, None, {}, 1.0, [p], "logits")
    for r in range(3):
        p.fill_(r + 1)  # the student's parameters after round r + 1
        checks.after_round()
    assert checks.keep_best_if_worse(3) == 2 and p.item() == 2.0


def test_a_student_better_on_both_checks_is_handed_back_as_it_ends(monkeypatch):
    import psaq.quant.adaptive as adaptive

    script = iter([{"heldout": 1.0, "noise": 0.5}, {"heldout": 0.5, "noise": 0.4}, {"heldout": 0.9, "noise": 0.45}])
    monkeypatch.setattr(adaptive._Checks, "_measure", lambda self: next(script))
    p = torch.zeros(1)
    checks = adaptive._Checks(None, None, {}, 1.0, [p], "logits")
    for r in range(2):
        p.fill_(r + 1)
        checks.after_round()
    assert checks.keep_best_if_worse(2) == 2 and p.item() == 2.0  # round 1 was better, round 2 no worse than the start


@pytest.mark.parametrize("student_parts", ["weights+scales", "weights", "scales"])
@pytest.mark.parametrize("factory", ["tiny_vit", "tiny_swin"])
def test_no_student_setting_ends_further_from_the_teacher_than_calibration_left_it(factory, student_parts):
    """At W4A4 with the paper's quantizers, on tiny ViT and Swin models: whatever the rounds do,
    the student handed back is no further from the teacher on the held-out samples or on noise than at the start."""
    import tests.tiny

    torch.manual_seed(0)
    teacher = getattr(tests.tiny, factory)()
    images = torch.randn(8, 3, 32, 32).clamp(-1, 1)
    student = calibrate(quantize_(copy.deepcopy(teacher), QuantConfig(w_bits=4, a_bits=4)), images)
    start = measure(teacher, student, images[-2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, h = adapt(student, teacher, images, SynthesisConfig(**STILL), AdaptiveConfig(
            rounds=2, sample_steps=2, student_steps=5, weight_lr=1e-2, student=student_parts), TINY_SPEC, progress=False)
    assert h["discrepancy_heldout"][0] == pytest.approx(start, rel=1e-6)
    assert measure(teacher, student, images[-2:]) <= start * (1 + 1e-4) + 1e-7
    noise = torch.randn((64, *TINY_SPEC.input_size), generator=torch.Generator().manual_seed(0))
    assert measure(teacher, student, noise) <= h["discrepancy_noise"][0] * (1 + 1e-4) + 1e-7  # nor on noise


def test_straight_through_gradients_stop_where_the_forward_clips():
    q = ActQuantizer(4)
    q.set_qparams(torch.tensor([0.1]), torch.tensor([8.0]))  # the grid covers [-0.8, 0.7]
    q.straight_through = True
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 0.69, 5.0], requires_grad=True)
    q(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    q.clip_straight_through = False  # how V2 ran before (kept to measure the change): the identity everywhere
    x.grad = None
    q(x).sum().backward()
    assert x.grad.tolist() == [1.0] * 6


def test_a_headless_backbone_is_refused_in_one_line_not_given_a_kl_over_features():
    from tests.tiny import tiny_vit

    teacher = tiny_vit(num_classes=0)
    images = torch.randn(4, 3, 32, 32)
    # no classifier: the official set's head_input has no place, the compact set quantizes what there is
    student = calibrate(quantize_(copy.deepcopy(teacher), QuantConfig(w_bits=4, a_bits=8, sites="compact")), images)
    with pytest.raises(ConfigError, match="no classifier head \\(num_classes=0\\); set adaptive.discrepancy: features") as err:
        adapt(student, teacher, images, SynthesisConfig(), AdaptiveConfig(rounds=1, sample_steps=1, student_steps=1),
              TINY_SPEC, progress=False)
    assert "\n" not in str(err.value)


def test_the_feature_discrepancy_is_the_relative_squared_error_of_the_tokens():
    t, s = torch.randn(3, 5, 7, dtype=torch.float64), torch.randn(3, 5, 7, dtype=torch.float64)
    want = (((s - t) ** 2).sum((1, 2)) / (t ** 2).sum((1, 2))).mean()
    torch.testing.assert_close(feature_discrepancy(t, s).double(), want, atol=1e-6, rtol=1e-6)
    assert feature_discrepancy(t, t).item() == 0.0 and feature_discrepancy(t, torch.zeros_like(t)).item() == 1.0


@pytest.mark.parametrize("factory", ["tiny_vit", "tiny_swin"])
def test_a_headless_backbone_runs_v2_on_its_features_and_exports_them(tmp_path, factory):
    """num_classes=0: no logits, no labels. The student learns the teacher's output tokens on
    label-free samples, the paper's default sites find their places (the classifier's input aside),
    and the exported model outputs the simulated model's features."""
    import numpy as np

    import tests.tiny
    from psaq.quant.onnx_export import export_onnx, ort_session

    torch.manual_seed(0)
    teacher = getattr(tests.tiny, factory)(num_classes=0)
    images = torch.randn(8, 3, 32, 32).clamp(-1, 1)
    cfg = QuantConfig(w_bits=4, a_bits=8)
    student = calibrate(quantize_(copy.deepcopy(teacher), cfg), images)
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    out, h = adapt(student, teacher, images, SynthesisConfig(**STILL, ce_weight=0.0),
                   AdaptiveConfig(rounds=2, sample_steps=2, student_steps=5, discrepancy="features", weight_lr=1e-3),
                   TINY_SPEC, progress=False)
    assert out.shape == images.shape and all(0 <= v < 1 for v in h["discrepancy_heldout"])
    assert measure(teacher, student, images[-2:], kind="features") <= h["discrepancy_heldout"][0] * (1 + 1e-4) + 1e-7
    assert any(not torch.equal(p, before[n]) for n, p in student.named_parameters()) or h["kept_round"][0] == 0
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        sim = student(x).numpy()
    assert sim.shape == (6, teacher.num_features)
    onnx_out = ort_session(export_onnx(student, cfg, x[:1], tmp_path / "headless.onnx")).run(None, {"images": x.numpy()})[0]
    level = (sim.max() - sim.min()) / 255  # the output site quantizes the features at 8 bits
    assert (np.abs(onnx_out - sim) <= 3 * level).mean() >= 0.9
