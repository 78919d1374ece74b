"""Does a model have the outlier activations that make noise calibration collapse on ImageNet ViTs?

On ImageNet DeiTs, with the paper's per-tensor min/max quantizers at W4A8, calibrating on
Gaussian noise collapses top-1 (7.8 % on DeiT-T) while psaq's images hold. One explanation is the
residual stream's few huge values on real images, which noise does not produce: a range taken on
noise then clips them. This script measures, block by block on the residual stream of a model,
how far real images' largest values stand above their bulk (max |x| over the 99.9th percentile)
and how much of that range noise and psaq's images reach, so a small model can be compared with
what the ImageNet models show.

    .venv/bin/python benchmarks/outliers.py                           # fashion-vit, the weights psaq ships
    .venv/bin/python benchmarks/outliers.py --checkpoint fashion-vit=FILE --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import psaq.families.builtin  # noqa: F401 - registers the families whose blocks are hooked
from psaq.data import first_images, open_data
from psaq.models import ModelConfig, load_model
from psaq.report import markdown_table
from psaq.synth import SynthesisConfig, synthesize


@torch.no_grad()
def residual_stats(model, images: torch.Tensor) -> list[dict]:
    """Per block output: max |x|, the 99.9th percentile of |x| and the median |x| over every value."""
    found: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: found.append(o.detach().abs().flatten()))
             for b in model.blocks]
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for values in found:
        sample = values[torch.randperm(len(values), generator=torch.Generator().manual_seed(0))[:200_000]]
        out.append({"max": float(values.max()), "p999": float(torch.quantile(sample, 0.999)),
                    "median": float(sample.median())})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fashion-vit")
    ap.add_argument("--checkpoint", help="NAME=FILE: weights to use instead of the ones psaq ships")
    ap.add_argument("--steps", type=int, default=500, help="psaq synthesis steps per round (2 rounds)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    checkpoint = args.checkpoint.split("=", 1)[1] if args.checkpoint else None
    loaded = load_model(ModelConfig(args.model, checkpoint=checkpoint, pretrained=checkpoint is None))
    data = open_data(loaded.spec, None, None, loaded.dataset)
    real = first_images(data.eval_set, 256, 0)[0]
    noise = torch.randn(32, *loaded.spec.input_size, generator=torch.Generator().manual_seed(0))
    psaq_images = synthesize(loaded.model, SynthesisConfig(steps_per_round=args.steps), loaded.spec,
                             progress=False).images
    stats = {name: residual_stats(loaded.model, x) for name, x in
             (("real", real), ("gaussian", noise), ("psaq", psaq_images))}
    rows = []
    for b, r in enumerate(stats["real"]):
        rows.append([f"block {b}", f"{r['max']:.1f}", f"{r['max'] / r['p999']:.1f}×", f"{r['max'] / r['median']:.0f}×",
                     f"{stats['gaussian'][b]['max'] / r['max']:.2f}", f"{stats['psaq'][b]['max'] / r['max']:.2f}"])
    print(f"{args.model}: the residual stream after each block, 256 test images (real), 32 noise, 32 psaq images\n")
    print(markdown_table(["block output", "real max |x|", "max / 99.9th pct", "max / median",
                          "noise max / real max", "psaq max / real max"], rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(stats, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
