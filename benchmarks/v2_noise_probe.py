"""Does a data-free probe see a V2 student that fits the synthetic images and loses the real ones?

    .venv/bin/python benchmarks/v2_noise_probe.py --model fashion-swin --checkpoint FILE
    .venv/bin/python benchmarks/v2_noise_probe.py --model fashion-vit

v1's images (seed 0) calibrate the model at W4A4 with the paper's quantizers; then V2's student
step runs on those fixed images (``adaptive.sample_steps: 0``) with each student setting. Before
and after it, the student's KL(teacher || student) and top-1 agreement with the teacher are taken
on three probe sets the student never trained on: 64 Gaussian-noise images, and the PSAQ images
of two other synthesis seeds (label-free and with labels); and its top-1 on the test set. The
held-out check of psaq's V2 watches images like the last two.
"""

from __future__ import annotations

import argparse
import copy

import torch
from tables import add_model_args, load_given  # benchmarks/tables.py

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT)
from psaq.evaluation import evaluate
from psaq.quant import QuantConfig, quantized_copy
from psaq.quant.adaptive import AdaptiveConfig, adapt
from psaq.sources import eval_loader, model_data
from psaq.synth import SynthesisConfig, synthesize


@torch.no_grad()
def kl_and_agreement(teacher, student, images: torch.Tensor) -> tuple[float, float]:
    t, s = teacher(images).log_softmax(-1), student(images).log_softmax(-1)
    return float((t.exp() * (t - s)).sum(-1).mean()), float((t.argmax(-1) == s.argmax(-1)).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--steps", type=int, default=200, help="synthesis steps per round (2 rounds)")
    args = ap.parse_args()
    device = torch.device("cpu")
    loaded = load_given(args.cache_dir, args.model, args.checkpoint, device)
    teacher, spec = loaded.model, loaded.spec
    test = eval_loader(model_data(loaded, None))

    def images(method: str, seed: int) -> torch.Tensor:
        cfg = SynthesisConfig(method=method, seed=seed, steps_per_round=args.steps, warmup_steps=min(100, args.steps // 5))
        return synthesize(teacher, cfg, spec, device, None, progress=False).images

    v1 = images("psaq", 0)
    probes = {"noise": torch.randn(64, *spec.input_size, generator=torch.Generator().manual_seed(5)),
              "label-free PSAQ, seed 99": images("psaq-v2", 99), "PSAQ, seed 98": images("psaq", 98)}
    calibrated = quantized_copy(teacher, QuantConfig(w_bits=4, a_bits=4), v1, device)
    before = {name: kl_and_agreement(teacher, calibrated, x) for name, x in probes.items()}
    top1 = evaluate(calibrated, test, device).top1
    print(f"{args.model} W4A4 paper, v1 images seed 0: test top-1 {top1:.2f} after calibration")
    for student in ("scales", "weights+scales"):
        s = copy.deepcopy(calibrated)
        _, history = adapt(s, teacher, v1, SynthesisConfig(method="psaq-v2", seed=0),
                           AdaptiveConfig(sample_steps=0, student=student, seed=0), spec, device, False)
        held = history["discrepancy_heldout"]
        print(f"student {student}: test top-1 {top1:.2f} → {evaluate(s, test, device).top1:.2f}; "
              f"held-out KL {held[0]:.4f} → {held[-1]:.4f}")
        for name, x in probes.items():
            kl, agree = kl_and_agreement(teacher, s, x)
            print(f"  {name:<26} KL {before[name][0]:.4f} → {kl:.4f}   agreement {before[name][1]:.3f} → {agree:.3f}")


if __name__ == "__main__":
    main()
