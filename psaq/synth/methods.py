"""Calibration modes (psaq, psaq-noent, psaq-v2, psaq-unique-pairs, gaussian, gaussian-clamped,
real), each registered with what it can do: whether it reads data, iterates, co-evolves."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import torch

from psaq.errors import ConfigError
from psaq.registry import Registry
from psaq.synth.optimize import optimize_samples
from psaq.synth.result import SynthesisContext, SynthesisResult



@dataclasses.dataclass(frozen=True)
class SynthMethod:
    """A calibration mode and what it can do; callers ask these, never the mode's name."""

    name: str
    run: Callable[["SynthesisConfig", SynthesisContext], SynthesisResult]  # noqa: F821
    needs_data: bool = False  # reads training images (not data-free: a baseline)
    iterates: bool = False  # optimizes its images step by step (its cost is synthesis steps)
    co_evolves: bool = False  # after calibration, its samples and the quantized model evolve together
    draws_labels: bool = False  # draws a class per image for a cross-entropy term (synthesis.ce_weight > 0)

    def __call__(self, config, ctx: SynthesisContext) -> SynthesisResult:
        return self.run(config, ctx)


SYNTH_METHODS: Registry[SynthMethod] = Registry("calibration mode")


def method(name: str, **can) -> Callable:
    """Registers a function as the calibration mode ``name``, with what it can do (``SynthMethod``)."""
    def add(run):
        SYNTH_METHODS.register(name)(SynthMethod(name, run, **can))
        return run

    return add


def method_of(name: str) -> SynthMethod:
    return SYNTH_METHODS.get(name)


def _noise(config, ctx: SynthesisContext) -> torch.Tensor:
    g = torch.Generator().manual_seed(config.seed)
    return torch.randn((config.num_samples, *ctx.spec.input_size), generator=g)


def _unlabeled(images: torch.Tensor, started: float) -> SynthesisResult:
    labels = torch.full((images.shape[0],), -1, dtype=torch.long)
    return SynthesisResult(images.float(), labels, wall_s=time.perf_counter() - started)


@method("gaussian")
def gaussian(config, ctx: SynthesisContext) -> SynthesisResult:
    """N(0, 1) in normalized space: the paper's noise baseline."""
    started = time.perf_counter()
    return _unlabeled(_noise(config, ctx), started)


@method("gaussian-clamped")
def gaussian_clamped(config, ctx: SynthesisContext) -> SynthesisResult:
    """N(0, 1) clipped to the normalized range of valid [0, 1] pixels."""
    started = time.perf_counter()
    lo, hi = ctx.spec.pixel_bounds()
    return _unlabeled(torch.maximum(torch.minimum(_noise(config, ctx), hi), lo), started)


@method("real", needs_data=True)
def real(config, ctx: SynthesisContext) -> SynthesisResult:
    """N real training images drawn by the seed: the upper baseline that needs data."""
    if ctx.real_source is None:
        raise ConfigError("calibration mode 'real' needs training images and none were given: pass --calib-dataset "
                          "PATH (a folder of class folders), or --dataset ROOT holding train/ and val/")
    started = time.perf_counter()
    images, labels = ctx.real_source(config.num_samples, config.seed)
    return SynthesisResult(images.float().cpu(), labels.cpu(), wall_s=time.perf_counter() - started)


@method("psaq", iterates=True, draws_labels=True)
def psaq(config, ctx: SynthesisContext) -> SynthesisResult:
    """Patch-similarity entropy + cross-entropy + TV prior (PSAQ-ViT)."""
    return optimize_samples(config, ctx, use_entropy=True)


@method("psaq-noent", iterates=True, draws_labels=True)
def psaq_noent(config, ctx: SynthesisContext) -> SynthesisResult:
    """The ablation: the same optimization without the entropy term."""
    return optimize_samples(config, ctx, use_entropy=False)


# its samples start here; the teacher-student loop runs after calibration (psaq.quant.adaptive)
@method("psaq-v2", iterates=True, co_evolves=True)
def psaq_v2(config, ctx: SynthesisContext) -> SynthesisResult:
    """PSAQ-ViT V2's starting samples: the patch-similarity entropy and the image priors without class
    labels (V2 drops the category guidance). The reconstruct stage then evolves them with the student."""
    return optimize_samples(dataclasses.replace(config, ce_weight=0.0), ctx, use_entropy=True)


@method("psaq-unique-pairs", iterates=True, draws_labels=True)
def psaq_unique_pairs(config, ctx: SynthesisContext) -> SynthesisResult:
    """psaq with psaq's own entropy estimator (``entropy_estimator: unique-pairs``), as a grid method
    so that a benchmark can pair it with the official estimator on the same models and seeds."""
    return optimize_samples(dataclasses.replace(config, entropy_estimator="unique-pairs"), ctx, use_entropy=True)
