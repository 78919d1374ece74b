"""What the table scripts share: measure (or reload the saved measurement), render, write both."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def add_model_args(ap: argparse.ArgumentParser, default: str = "fashion-vit") -> None:
    """The one-model probes' arguments: which of psaq's models, and whose weights."""
    ap.add_argument("--model", default=default)
    ap.add_argument("--checkpoint", help="weights to use as they are (fashion-swin ships none)")
    ap.add_argument("--cache-dir", default=".")


def load_given(cache_dir: str, name: str, checkpoint: str | None = None, device="cpu", headless: bool = False):
    """psaq's model ``name`` with the weights a benchmark is given: ``checkpoint`` as it is, else the
    weights psaq ships for it, else the pipeline's trained ones (cached under ``cache_dir``)."""
    from psaq.models import ModelConfig
    from psaq.models.shipped import shipped_seeds
    from psaq.stages import model as model_stage

    config = ModelConfig(name, checkpoint=checkpoint, headless=headless,
                         pretrained=checkpoint is None and bool(shipped_seeds(name)))
    return model_stage.load(cache_dir, config, device)


def paired_runs(records: list[dict], key: Callable[[dict], object], a: dict, b: dict):
    """The paired top-1 difference of the runs matching ``a`` minus those matching ``b`` (each a
    field → value filter), matched on ``key(record)``; None when no run is in both."""
    import numpy as np

    from psaq.stats import paired_difference, unpack_correct

    def runs(want: dict) -> dict:
        return {key(r): unpack_correct(r["correct"], r["count"]) for r in records
                if all(r[k] == v for k, v in want.items())}

    ra, rb = runs(a), runs(b)
    keys = sorted(set(ra) & set(rb))
    return paired_difference(np.stack([ra[k] for k in keys]), np.stack([rb[k] for k in keys])) if keys else None


def add_output_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--cache-dir", default=".psaq-cache")
    ap.add_argument("--render-only", action="store_true", help="re-render the tables from the saved JSON")


def measure_and_write(stem: str, args: argparse.Namespace, run: Callable[[argparse.Namespace], dict],
                      render: Callable[[dict], str]) -> None:
    """``<out>/<stem>.json`` holds the raw measurement, ``<stem>.md`` the tables rendered from it."""
    out = Path(args.out)
    if args.render_only:
        result = json.loads((out / f"{stem}.json").read_text())
    else:
        result = run(args)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    text = render(result)
    print(text)
    (out / f"{stem}.md").write_text(text + "\n")
    print(f"\nwritten to {out}/{stem}.md and .json ({result['wall_s']:.0f} s of measurement)")


@dataclass
class DigitsModel:
    """A trained digits-vit with what every table measures it against."""

    loaded: object  # psaq.models.LoadedModel
    data: object  # psaq.sources' model data: the evaluation and training images
    batches: list  # the evaluation batches
    fp32: object  # its FP32 evaluation (top-1, predictions)
    source: object  # the real-image source the `real` mode draws from


def digits_model(train_seed: int, cache_dir: str, device) -> DigitsModel:
    from psaq.evaluation import evaluate
    from psaq.models import ModelConfig
    from psaq.stages import model as model_stage
    from psaq.sources import eval_loader, model_data, real_source

    loaded = model_stage.load(cache_dir, ModelConfig("digits-vit", train_seed=train_seed), device)
    data = model_data(loaded, "digits")
    batches = eval_loader(data)
    return DigitsModel(loaded, data, batches, evaluate(loaded.model, batches, device), real_source(data))
