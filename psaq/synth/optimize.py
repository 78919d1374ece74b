"""The PSAQ-ViT optimization loop: images from noise, by Adam, through the frozen model."""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from psaq import cancel
from psaq.errors import ConfigError, SynthesisDivergedError
from psaq.families import family_of
from psaq.synth.acceleration import Compiled, autocast
from psaq.synth.entropy import KdeSettings, block_entropies
from psaq.synth.hooks import AttentionOutputHooks
from psaq.synth.result import SynthesisContext, SynthesisResult
from psaq.synth.priors import jitter_and_flip, scaled_jitter, total_variation, tv_target_scale, warmup_cosine_lr

def default_lr(model: nn.Module) -> float:
    """The paper's Adam rate for the model's family (``Family.synthesis_lr``)."""
    return family_of(model).synthesis_lr


@contextmanager
def frozen_eval(model: nn.Module):
    """Eval mode and no parameter gradients for the duration; restores both afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


TERMS = ("loss", "entropy", "ce", "tv")
TERM_NAMES = {"loss": "loss", "entropy": "entropy", "ce": "cross-entropy", "tv": "total-variation"}
SYNC_EVERY = 10  # steps between reading the loss terms back: each read waits for the device


def _check_finite(first_step: int, values: torch.Tensor) -> None:
    """``values`` (steps, terms) read back from the device; names the first bad step and term."""
    bad = ~torch.isfinite(values)
    if bad.any():
        row = int(bad.any(dim=1).nonzero()[0])
        # name the term that broke rather than the total it broke
        col = next(c for c in (*range(1, len(TERMS)), 0) if bad[row, c])
        raise SynthesisDivergedError(
            f"synthesis diverged at step {first_step + row}: loss term '{TERM_NAMES[TERMS[col]]}' is "
            f"{values[row, col].item()}; lower the learning rate or the term's weight"
        )


def optimize_samples(config, ctx: SynthesisContext, use_entropy: bool) -> SynthesisResult:
    """Optimize ``config.num_samples`` images from N(0, 1) for ``rounds × steps_per_round`` steps.

    Each step: jitter + flip the batch, forward, loss = −Σ_blocks entropy·w_ent
    + w_ce·CE(logits, pseudo-labels) + w_tv·|TV(x) − v|, Adam step, clamp to valid pixels.
    As in the official code, one Adam runs through every round (its moments carry over) and
    each round restarts the warm-up + cosine learning-rate schedule.
    """
    model, spec, device = ctx.model, ctx.spec, ctx.device
    g = torch.Generator().manual_seed(config.seed)
    dtype = next(model.parameters()).dtype  # images live in the model's float type
    images = torch.randn((config.num_samples, *spec.input_size), generator=g).to(device=device, dtype=dtype)
    if spec.num_classes < 1 and config.ce_weight:
        raise ConfigError(f"synthesis mode '{config.method}' draws a class label per image for its cross-entropy term, "
                          "but the model has no classifier head (num_classes=0); set synthesis.ce_weight: 0 "
                          "(the patch-similarity and TV priors only) or calibrate on gaussian or real images")
    # a headless backbone (num_classes=0) has no labels to draw; its cross-entropy term is off (above)
    labels = torch.randint(0, spec.num_classes, (config.num_samples,), generator=g).to(device) \
        if spec.num_classes > 0 else None
    lo_tv, hi_tv = config.tv_target_range
    tv_target = (lo_tv + (hi_tv - lo_tv) * float(torch.rand(1, generator=g))) * tv_target_scale(images.shape)
    lo, hi = spec.pixel_bounds(device=device, dtype=dtype)
    lr = config.lr if config.lr is not None else default_lr(model)
    prefix = int(getattr(model, "num_prefix_tokens", 0))
    image_side = spec.input_size[-1]

    compiled = Compiled(model, config, device)
    kde = KdeSettings(config.kde_bandwidth, config.kde_points, config.kde_eps, compiled.kde)

    images.requires_grad_(True)
    terms = torch.zeros((config.total_steps, len(TERMS)), device=device, dtype=dtype)  # filled on the device, read in blocks
    history: dict[str, list[float]] = {name: [] for name in (*TERMS, "lr")}
    started = time.perf_counter()
    hooks = AttentionOutputHooks(model) if use_entropy else nullcontext()
    with frozen_eval(model), hooks:
        bar = tqdm(total=config.total_steps, desc=f"synthesize {config.method}", disable=not ctx.progress, unit="step")
        step = read = 0
        optimizer = torch.optim.Adam([images], lr=lr, betas=config.betas, eps=config.adam_eps)
        for round_idx in range(config.rounds):
            max_shift = scaled_jitter(config.jitter[round_idx], image_side)
            for round_step in range(config.steps_per_round):
                cancel.check()
                step_lr = warmup_cosine_lr(round_step, config.steps_per_round, config.warmup, lr)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr
                x = jitter_and_flip(images, max_shift, config.flip_prob, g)
                with compiled.first_step(step):
                    with autocast(config.precision, device):
                        logits = compiled.model(x)
                    # bf16 logits get a float32 loss; float64 ones keep theirs
                    ce = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels) \
                        if labels is not None else torch.zeros((), device=device, dtype=dtype)
                    tv = (total_variation(x) - tv_target).abs()
                    if use_entropy:
                        entropy = block_entropies(hooks.take(), config.num_samples, prefix,
                                                  config.entropy_estimator, kde).sum()
                    else:
                        entropy = torch.zeros((), device=device)
                    loss = -config.entropy_weight * entropy + config.ce_weight * ce + config.tv_weight * tv
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                optimizer.step()
                with torch.no_grad():
                    images.copy_(torch.maximum(torch.minimum(images, hi), lo))
                    terms[step] = torch.stack([loss, entropy, ce, tv]).detach()
                history["lr"].append(step_lr)
                step += 1
                if step % SYNC_EVERY == 0 or step == config.total_steps:
                    block = terms[read:step].cpu()
                    _check_finite(read, block)
                    for name, column in zip(TERMS, block.T.tolist()):
                        history[name].extend(column)
                    bar.update(step - read)
                    read = step
                    bar.set_postfix(loss=f"{history['loss'][-1]:.3f}", ent=f"{history['entropy'][-1]:.3f}",
                                    ce=f"{history['ce'][-1]:.3f}", tv=f"{history['tv'][-1]:.1f}")
        bar.close()
    wall = time.perf_counter() - started
    if labels is None:
        labels = torch.full((config.num_samples,), -1, dtype=torch.long)  # as the label-free modes say "none"
    return SynthesisResult(images.detach().float().cpu(), labels.cpu(), history, wall_s=wall, steps=step)
