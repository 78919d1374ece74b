"""PSAQ-ViT V2's adaptive teacher-student loop: the samples and the quantized model evolve together.

The full-precision model is the teacher, the calibrated quantized model the student. Each round:

(a) the samples move toward where the student disagrees with the teacher (hard samples), still
    under the patch-similarity prior: Adam on the images minimises
    −w_ent·Σ_blocks entropy(teacher) − w_disc·KL(T ‖ S) + w_tv·|TV(x) − v|,
    through v1's jitter and flip, with no class labels (V2 drops the category guidance);
(b) the student learns to agree with the teacher on them: Adam minimises KL(T ‖ S) on jittered
    and flipped views, over latent weights whose forward is their fake-quantized value
    (straight-through rounding, the calibrated per-channel scale kept) and the activation
    quantizers' scales (LSQ).

At the end the weights are written onto their grid (w = s·clamp(round(w_latent/s)), exactly what
the quantized forward computes) and the learned scales frozen. The student is checked after every
round on two sets it never trains on: a share of the starting samples, held out, and Gaussian noise
drawn as synthesis draws its starting images. When its discrepancy on either ends above where it
started, the student of its best round is kept, with a warning. The held-out samples alone miss a
student that fits synthetic images and loses real ones (on a Swin, its discrepancy there fell while
test top-1 fell by 14 points); its discrepancy on noise rose with that loss.

This is psaq's reading of the paper's abstract; no code of V2 is public. The abstract fixes: the
patch-similarity metric of v1, kept; an adaptive teacher-student strategy in which the samples and
the quantized model evolve in turn, competitively, under the full-precision teacher; no category
guidance; "task- and model-independent prior information", unnamed; the "naive quantization
strategy". Everything else is psaq's choice (``AdaptiveConfig``, the README's table of
differences): the KL between the logits as the discrepancy (it needs a classifier head, which the
abstract's detection and segmentation results suggest V2 does not), v1's TV prior, jitter and flip
as the priors, the round structure, step counts and rates, which student parameters learn (the
default learns activation scales too, LSQ, beyond a naive quantizer), and the two checks.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from psaq.input_spec import is_headless
from psaq import cancel
from psaq.data import InputSpec
from psaq.errors import ConfigError, SynthesisDivergedError, check_seed
from psaq.quant.layers import QuantConv2d, QuantLinear
from psaq.quant.quantizers import ActQuantizer, learning, round_ste
from psaq.synth.config import SynthesisConfig
from psaq.synth.entropy import KdeSettings, block_entropies
from psaq.synth.hooks import AttentionOutputHooks
from psaq.synth.optimize import default_lr
from psaq.synth.priors import jitter_and_flip, scaled_jitter, total_variation, tv_target_scale

STUDENT_PARTS = ("weights+scales", "weights", "scales")
# logits: KL(T ‖ S) between the classifier's softmaxes; features: the backbone's output tokens
# (``forward_features``), relative squared error: task-independent, and what a headless backbone has
DISCREPANCIES = ("logits", "features")


@dataclass(frozen=True)
class AdaptiveConfig:
    """The teacher-student loop of ``--calib psaq-v2`` (psaq's settings where the paper is silent)."""

    rounds: int = 5
    sample_steps: int = 40  # Adam steps on the images per round, (a)
    student_steps: int = 100  # Adam steps on the student per round, (b)
    discrepancy_weight: float = 1.0  # w_disc in (a)
    temperature: float = 1.0  # of both softmaxes in KL(T ‖ S)
    sample_lr: float | None = None  # None: the paper's per-family synthesis rate
    weight_lr: float = 1e-4
    scale_lr: float = 1e-3
    student: str = "weights+scales"  # which student parameters learn in (b)
    seed: int = 0  # the views' jitter and flips
    # the share of the starting samples the rounds never touch: the student is checked on them
    # after every round, and kept at its best there if its discrepancy ends above where it started
    holdout: float = 0.25
    # Gaussian-noise images (synthesis' starting distribution, drawn from ``seed``) the student is
    # checked on as on the held-out samples: 0 turns that check off
    noise_probe: int = 64
    discrepancy: str = "logits"  # what the teacher and the student are compared on (DISCREPANCIES)

    def __post_init__(self) -> None:
        for name in ("rounds", "sample_steps", "student_steps", "noise_probe"):
            value = getattr(self, name)
            # sample_steps 0: the student learns on fixed samples (no co-evolution); noise_probe 0: no noise check
            least = 0 if name in ("sample_steps", "noise_probe") else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"adaptive.{name} must be an integer >= {least}, got {value!r}")
        if isinstance(self.holdout, bool) or not isinstance(self.holdout, (int, float)) or not 0 <= self.holdout < 1:
            raise ConfigError(f"adaptive.holdout must be a share in [0, 1), got {self.holdout!r}")
        for name in ("temperature", "weight_lr", "scale_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"adaptive.{name} must be positive, got {getattr(self, name)}")
        if not self.discrepancy_weight >= 0:
            raise ConfigError(f"adaptive.discrepancy_weight must be >= 0, got {self.discrepancy_weight}")
        if self.sample_lr is not None and not self.sample_lr > 0:
            raise ConfigError(f"adaptive.sample_lr must be positive or null, got {self.sample_lr}")
        if self.discrepancy not in DISCREPANCIES:
            raise ConfigError(f"adaptive.discrepancy must be one of {', '.join(DISCREPANCIES)}, got {self.discrepancy!r}")
        if self.student not in STUDENT_PARTS:
            raise ConfigError(f"adaptive.student must be one of {', '.join(STUDENT_PARTS)}, got {self.student!r}")
        check_seed("adaptive.seed", self.seed)


def discrepancy(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(T/τ) ‖ softmax(S/τ)), mean over images."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean", log_target=True)


def feature_discrepancy(teacher_features: torch.Tensor, student_features: torch.Tensor) -> torch.Tensor:
    """‖S − T‖² / ‖T‖² per image over all its tokens and channels, mean over images: 0 when the
    student's features are the teacher's, 1 when they are zero; no classifier involved."""
    t = teacher_features.float().flatten(1)
    s = student_features.float().flatten(1)
    return ((s - t).pow(2).sum(1) / t.pow(2).sum(1).clamp_min(1e-12)).mean()


def outputs(model: nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """What the discrepancy ``kind`` compares: the logits, or the backbone's output tokens."""
    return model(x) if kind == "logits" else model.forward_features(x)


def compare(teacher_out: torch.Tensor, student_out: torch.Tensor, kind: str, temperature: float = 1.0) -> torch.Tensor:
    return discrepancy(teacher_out, student_out, temperature) if kind == "logits" \
        else feature_discrepancy(teacher_out, student_out)


class _LatentWeights:
    """A layer's weights as a float latent whose forward is its fake-quantized value (STE)."""

    def __init__(self, layer: QuantLinear | QuantConv2d):
        self.layer = layer
        self.quantizer = layer.weight_quantizer
        self.latent = nn.Parameter(layer.weight.detach().clone())

    def _on_grid(self, latent: torch.Tensor) -> torch.Tensor:
        q = self.quantizer
        scale, zero = q.scale.to(latent.dtype), q.zero_point.to(latent.dtype)
        return (torch.clamp(round_ste(latent / scale + zero), q.qmin, q.qmax) - zero) * scale

    def soft(self, _weight: torch.Tensor) -> torch.Tensor:
        return self._on_grid(self.latent)

    @torch.no_grad()
    def harden(self) -> None:
        self.layer.weight.copy_(self._on_grid(self.latent).to(self.layer.weight.dtype))


@contextmanager
def _student_parameters(student: nn.Module, parts: str) -> Iterator[tuple[list[_LatentWeights], list[ActQuantizer]]]:
    """Inside: the student's weights run through learnable latents and its activation quantizers
    through learnable scales (as ``parts`` asks); on exit both are written back, whatever happened."""
    latents = [] if parts == "scales" else [_LatentWeights(m) for m in student.modules()
                                            if isinstance(m, (QuantLinear, QuantConv2d))]
    acts = [] if parts == "weights" else [m for m in student.modules() if isinstance(m, ActQuantizer)
                                         and m.learnable_scale and bool(m.calibrated)]
    # every activation quantizer passes gradients straight through, so the images in (a) and the
    # weights in (b) see the whole student (the official rounding has no gradient)
    every_act = [m for m in student.modules() if isinstance(m, ActQuantizer)]
    with learning(every_act, scales=acts, straight_through=True, rounding={lw.quantizer: lw.soft for lw in latents}):
        try:
            yield latents, acts
        finally:
            for lw in latents:
                lw.harden()


def _requires_grad(params: list[torch.Tensor], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


@torch.no_grad()
def measure(teacher: nn.Module, student: nn.Module, images: torch.Tensor, temperature: float = 1.0,
            batch_size: int = 64, kind: str = "logits") -> float:
    """The discrepancy ``kind`` on ``images`` as they are (no views), mean over images."""
    total = 0.0
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size]
        total += float(compare(outputs(teacher, x, kind), outputs(student, x, kind), kind, temperature)) * x.shape[0]
    return total / images.shape[0]


def adapt(student: nn.Module, teacher: nn.Module, images: torch.Tensor, synth: SynthesisConfig, cfg: AdaptiveConfig,
          spec: InputSpec, device: str | torch.device = "cpu", progress: bool = True
          ) -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Run the loop on a calibrated ``student`` (changed in place) from ``images``; returns the final
    samples (float32, CPU: the rounds' samples, then the held-out ones as they were) and, per round,
    the discrepancy at its start, after (a) and after (b), the teacher's summed block entropy
    after (a), the discrepancy on the held-out samples and on the noise probe (before the first
    round, then after each), the round whose student was kept (``kept_round``: 0 is the calibrated
    one), and the wall time.

    The held-out samples (``cfg.holdout`` of ``images``) are never optimised or trained on, nor is
    the noise probe (``cfg.noise_probe`` images from N(0, 1)). When the student's discrepancy on
    either ends above where it started, the student of the round where the worse of the two, each
    relative to its start, was lowest is kept, and a warning says so: the rounds never hand back a
    student further from the teacher than calibration left it, on images it did not learn from."""
    kind = cfg.discrepancy
    if kind == "logits" and is_headless(teacher):
        raise ConfigError(f"psaq-v2's discrepancy 'logits' is a KL between classification logits, but "
                          f"{type(teacher).__name__} has no classifier head (num_classes=0); set "
                          "adaptive.discrepancy: features (the backbone's output tokens; --v2-discrepancy features)")
    device = torch.device(device)
    student.eval().to(device)
    teacher.eval().to(device)
    dtype = next(teacher.parameters()).dtype
    g = torch.Generator().manual_seed(cfg.seed)
    # at least one image held out when asked for, and at least one left to the rounds
    n_hold = min(max(int(images.shape[0] * cfg.holdout), 1 if cfg.holdout else 0), images.shape[0] - 1)
    held = images[images.shape[0] - n_hold:].to(device=device, dtype=dtype)
    x = images[: images.shape[0] - n_hold].to(device=device, dtype=dtype).clone().requires_grad_(True)
    lo, hi = spec.pixel_bounds(device=device, dtype=dtype)
    lo_tv, hi_tv = synth.tv_target_range
    tv_target = (lo_tv + (hi_tv - lo_tv) * float(torch.rand(1, generator=g))) * tv_target_scale(tuple(x.shape))
    max_shift = scaled_jitter(synth.jitter[-1], spec.input_size[-1])
    kde = KdeSettings(synth.kde_bandwidth, synth.kde_points, synth.kde_eps)
    prefix = int(getattr(teacher, "num_prefix_tokens", 0))
    sample_lr = cfg.sample_lr or default_lr(teacher)
    history: dict[str, list[float]] = {k: [] for k in ("discrepancy_start", "discrepancy_after_samples",
                                                       "discrepancy_after_student", "entropy", "student_loss",
                                                       "discrepancy_heldout", "discrepancy_noise")}
    teacher_params = [p for p in teacher.parameters()]
    flags = [(p, p.requires_grad) for p in (*teacher_params, *student.parameters())]
    _requires_grad([p for p, _ in flags], False)
    started = time.perf_counter()
    bar = tqdm(total=cfg.rounds * (cfg.sample_steps + cfg.student_steps), desc="psaq-v2", disable=not progress,
               unit="step")
    try:
        with _student_parameters(student, cfg.student) as (latents, acts):
            groups = [{"params": [lw.latent for lw in latents], "lr": cfg.weight_lr},
                      {"params": [a.learned_scale for a in acts], "lr": cfg.scale_lr}]
            student_params = [p for group in groups for p in group["params"]]
            student_opt = torch.optim.Adam([gr for gr in groups if gr["params"]])
            # its own generator: the views' draws stay those of a run without the probe
            noise = torch.randn((cfg.noise_probe, *spec.input_size), generator=torch.Generator().manual_seed(cfg.seed))
            checked = _Checks(teacher, student, {"heldout": held, "noise": noise.to(device=device, dtype=dtype)},
                              cfg.temperature, student_params, kind)
            for name, value in checked.start.items():
                history[f"discrepancy_{name}"].append(value)
            for _ in range(cfg.rounds):
                history["discrepancy_start"].append(measure(teacher, student, x.detach(), cfg.temperature, kind=kind))
                # (a) hard samples under the patch-similarity prior; the student is fixed
                _requires_grad(student_params, False)
                # a fresh Adam each round: the student its moments were attacking has changed since
                sample_opt = torch.optim.Adam([x], lr=sample_lr, betas=synth.betas, eps=synth.adam_eps)
                entropy = torch.zeros(())
                with AttentionOutputHooks(teacher) as hooks:
                    for _ in range(cfg.sample_steps):
                        cancel.check()
                        view = jitter_and_flip(x, max_shift, synth.flip_prob, g)
                        t_out = outputs(teacher, view, kind)
                        entropy = block_entropies(hooks.take(), x.shape[0], prefix, synth.entropy_estimator, kde).sum()
                        disc = compare(t_out, outputs(student, view, kind), kind, cfg.temperature)
                        tv = (total_variation(view) - tv_target).abs()
                        loss = -synth.entropy_weight * entropy - cfg.discrepancy_weight * disc + synth.tv_weight * tv
                        _check_finite(loss, "samples")
                        sample_opt.zero_grad(set_to_none=True)
                        loss.backward()
                        sample_opt.step()
                        with torch.no_grad():
                            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
                        bar.update(1)
                history["entropy"].append(float(entropy.detach()))
                history["discrepancy_after_samples"].append(measure(teacher, student, x.detach(), cfg.temperature,
                                                                    kind=kind))
                # (b) the student agrees with the teacher on them
                _requires_grad(student_params, True)
                fixed = x.detach()
                losses = []
                for _ in range(cfg.student_steps):
                    cancel.check()
                    view = jitter_and_flip(fixed, max_shift, synth.flip_prob, g)
                    with torch.no_grad():
                        t_out = outputs(teacher, view, kind)
                    loss = compare(t_out, outputs(student, view, kind), kind, cfg.temperature)
                    _check_finite(loss, "student")
                    student_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    student_opt.step()
                    losses.append(float(loss.detach()))
                    bar.update(1)
                _requires_grad(student_params, False)
                history["student_loss"].append(sum(losses) / len(losses))
                history["discrepancy_after_student"].append(measure(teacher, student, fixed, cfg.temperature, kind=kind))
                for name, value in checked.after_round().items():
                    history[f"discrepancy_{name}"].append(value)
                bar.set_postfix(kl=f"{history['discrepancy_after_student'][-1]:.4f}")
            history["kept_round"] = [checked.keep_best_if_worse(cfg.rounds)]
    finally:
        bar.close()
        for p, flag in flags:
            p.requires_grad_(flag)
    history["wall_s"] = [time.perf_counter() - started]
    if history["kept_round"][0] != cfg.rounds:
        kept = int(history["kept_round"][0])
        rose = "; ".join(f"{_PROBE_NAMES[name]} {values[0]:.4f} → {values[-1]:.4f}" for name, values in
                         ((n, history[f"discrepancy_{n}"]) for n in checked.start) if values[-1] > values[0])
        kept_at = ", ".join(f"{_PROBE_NAMES[n]} {history[f'discrepancy_{n}'][kept]:.4f}" for n in checked.start)
        warnings.warn(f"psaq-v2: the student's discrepancy ended above its start on {rose}; kept round {kept}'s "
                      f"student ({kept_at}; round 0 is the calibrated one)", stacklevel=2)
    return torch.cat([x.detach(), held]).float().cpu(), history


_PROBE_NAMES = {"heldout": "held-out samples", "noise": "the noise probe"}


class _Checks:
    """The student checked on image sets the rounds never touch, and its best state by those checks.

    A round's score is its worst discrepancy relative to the start (1 at round 0): a student must
    not drift from the teacher on either set for its gains on the other."""

    def __init__(self, teacher: nn.Module, student: nn.Module, probes: dict[str, torch.Tensor], temperature: float,
                 params: list[torch.Tensor], kind: str):
        self.teacher, self.student, self.temperature, self.params, self.kind = teacher, student, temperature, params, kind
        self.probes = {name: x for name, x in probes.items() if x.shape[0] > 0}
        self.start = self._measure()
        self.best_score, self.best_round, self.last_score, self.round = 1.0, 0, 1.0, 0
        self.state = self._snapshot()

    def _measure(self) -> dict[str, float]:
        return {name: measure(self.teacher, self.student, x, self.temperature, kind=self.kind)
                for name, x in self.probes.items()}

    def _score(self, now: dict[str, float]) -> float:
        return max((now[n] / max(self.start[n], 1e-12) for n in now), default=1.0)

    def _snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def after_round(self) -> dict[str, float]:
        self.round += 1
        now = self._measure()
        self.last_score = self._score(now)
        if self.last_score < self.best_score:
            self.best_score, self.best_round, self.state = self.last_score, self.round, self._snapshot()
        return now

    @torch.no_grad()
    def keep_best_if_worse(self, rounds: int) -> int:
        """The round whose student the loop hands back: the last, unless a check's discrepancy ended
        above its start, then the best one (its latent weights and scales put back)."""
        if not self.last_score > 1.0:
            return rounds
        for p, saved in zip(self.params, self.state):
            p.copy_(saved)
        return self.best_round


def _check_finite(loss: torch.Tensor, part: str) -> None:
    if not torch.isfinite(loss):
        raise SynthesisDivergedError(f"psaq-v2 diverged in its {part} step (loss {loss.item()}); lower "
                                     f"adaptive.{'sample_lr' if part == 'samples' else 'weight_lr and adaptive.scale_lr'}")
