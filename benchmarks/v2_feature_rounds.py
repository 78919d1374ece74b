"""Round by round: does anything data-free follow a headless backbone's test cosine under V2?

    .venv/bin/python benchmarks/v2_feature_rounds.py --model fashion-swin --checkpoint FILE --seed 0

The backbone (``headless=True``) is calibrated at W4A4 with the paper's quantizers on label-free
PSAQ images (2 × ``--steps`` steps), then V2 runs on the feature discrepancy with its defaults.
Before the first round and after each, for the student against the float backbone: the mean token
cosine, the feature error ‖S − T‖²/‖T‖² and the ratio of mean token norms, on ``--test`` test
images, on V2's noise probe and on its held-out samples. The last two are what V2's checks watch.
"""

from __future__ import annotations

import argparse

import torch
from tables import add_model_args, load_given  # benchmarks/tables.py

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT)
import psaq.quant.adaptive as adaptive
from psaq.feature_evaluation import cosine_per_token, outputs
from psaq.quant import QuantConfig, quantized_copy
from psaq.sources import eval_loader, model_data
from psaq.synth import SynthesisConfig, synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap)
    ap.add_argument("--seed", type=int, default=0, help="synthesis seed, and V2's")
    ap.add_argument("--steps", type=int, default=200, help="synthesis steps per round (2 rounds)")
    ap.add_argument("--test", type=int, default=1000, help="test images scored each round")
    args = ap.parse_args()
    loaded = load_given(args.cache_dir, args.model, args.checkpoint, headless=True)
    teacher, spec = loaded.model, loaded.spec
    test = torch.cat([x for x, _ in eval_loader(model_data(loaded, None), 250)])[: args.test]
    synth = SynthesisConfig(method="psaq-v2", seed=args.seed, steps_per_round=args.steps,
                            warmup_steps=min(100, args.steps // 5))
    images = synthesize(teacher, synth, spec, "cpu", None, progress=False).images
    student = quantized_copy(teacher, QuantConfig(w_bits=4, a_bits=4), images, "cpu")
    cfg = adaptive.AdaptiveConfig(discrepancy="features", seed=args.seed)
    held = images[images.shape[0] - max(int(images.shape[0] * cfg.holdout), 1):]  # as adapt holds them out
    noise = torch.randn((cfg.noise_probe, *spec.input_size), generator=torch.Generator().manual_seed(cfg.seed))

    @torch.no_grad()
    def report(round_: int) -> None:
        cells = []
        for name, x in (("test", test), ("noise probe", noise), ("held-out", held)):
            t, s = outputs(teacher, x)[0], outputs(student, x)[0]
            cells.append(f"{name}: cosine {cosine_per_token(s, t).mean().item():.4f}, error "
                         f"{adaptive.feature_discrepancy(t, s).item():.4f}, norm ratio "
                         f"{(s.norm(dim=-1).mean() / t.norm(dim=-1).mean()).item():.3f}")
        print(f"round {round_}  " + " | ".join(cells), flush=True)

    checked_round = adaptive._Checks.after_round

    def after_round(self):
        out = checked_round(self)
        report(self.round)
        return out

    adaptive._Checks.after_round = after_round  # a look after each round, nothing else changed
    print(f"{args.model} headless, W4A4 paper, label-free PSAQ images seed {args.seed}, V2 on features")
    report(0)
    _, history = adaptive.adapt(student, teacher, images, synth, cfg, spec, "cpu", False)
    print(f"kept round {history['kept_round'][0]} of {cfg.rounds}")


if __name__ == "__main__":
    main()
