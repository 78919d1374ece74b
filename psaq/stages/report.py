"""Stage ``report``: the benchmark report of a grid run, content-addressed like every artifact.

A folder holding the Markdown report, ``summary.json`` and the figures, keyed by the metrics
and sample sets it summarizes; ``publish_view`` then copies it to ``reports/`` so what a run
prints, writes and logs is always that run's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

import psaq.families.builtin  # noqa: F401 - registers the built-in families (ViT/DeiT, Swin, BEiT) quantized and hooked here
from psaq.input_spec import is_headless
from psaq.data import first_images
from psaq.device import resolve_device
from psaq.evaluation import ranked
from psaq.io import read_samples, write_json
from psaq.models import ModelConfig
from psaq.plots import accuracy_vs_bits, paired_differences, sample_grid, similarity_histograms
from psaq.quant.serialize import activation_scales
from psaq.report import (accuracy_table, column_of, comparison_table, findings, headline, markdown_table, mean_std,
                         paired_comparisons, pivot, plot_rows, range_ratios, tracked_metrics)
from psaq.stages.stage import Stage
from psaq.stages.common import Weights, identity, load
from psaq.store import Artifact, Store, stable_hash
from psaq.synth.analysis import entropy_per_block, patch_similarities
from psaq.sources import model_data

# metrics.json: the figures DVC experiments compare (git-tracked, so each experiment keeps its own);
# accuracy.json and differences.json: the data of the two bar figures, which `dvc plots` draws
FILES = ("benchmark.md", "summary.json", "metrics.json", "accuracy.json", "differences.json", "samples.png",
         "similarity.png", "accuracy.png", "differences.png")
NOTATION = """\
Notation. WxAy: x-bit weights (symmetric, per output channel) and y-bit activations (asymmetric,
per tensor, at the quantizer sites of the run's site set). Observer: how an activation's range
is taken from the calibration images: minmax (the paper's rule; the column name alone),
percentile (99.99th) or mse (the range with the least rounding error). Calibration modes:
psaq (images synthesized from noise for diverse patch similarity, PSAQ-ViT), psaq-noent (the
same optimization without the entropy term), gaussian (N(0, 1) noise), gaussian-clamped (noise
clipped to valid pixels), real (training images: the baseline that needs data). Each cell is the
mean ± std over runs (a run: one trained model × one synthesis seed)."""


STAGE = Stage("report", __name__, ("grid",), ("model", "data", "samples", "evaluate"), (),
              tuple(f"reports/{{model}}/{name}" for name in FILES), "reports/runs", "report")


def summarize(records: list[dict]) -> dict:
    """{method: {column: {"mean", "std", "n"}}} plus the FP32 reference."""
    grid = pivot([{**r, "column": column_of(r)} for r in records], "method", "column", "top1")
    top1 = {m: {c: dict(zip(("mean", "std"), mean_std(v)), n=len(v)) for c, v in cols.items()} for m, cols in grid.items()}
    fp32 = [v for _, v in sorted({(r.get("train_seed", 0), r["fp32_top1"]) for r in records})]
    return {"top1": top1, "fp32_top1": mean_std(fp32)[0], "fp32_per_model": fp32}


def setting_notes(columns: list[str]) -> dict[str, str]:
    """Which quantizer sites each column ran: ``W4A4+repq`` names its set, a plain tag the official one."""
    return {c: f"the {c.split()[0].partition('+')[2]} site set" if "+" in c else "the official code's sites" for c in columns}


@torch.no_grad()
def as_labelled(model, images: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(images the model classifies as their label, labelled images); noise has no labels (-1)."""
    labelled = labels >= 0
    if not bool(labelled.any()) or is_headless(model):  # a headless backbone classifies nothing
        return 0, 0
    predicted = ranked(model(images[labelled.to(images.device)]).cpu())[:, 0]
    return int((predicted == labels[labelled]).sum()), int(labelled.sum())


def run(store: Store, model: ModelConfig, weights: Weights, records: list[dict], samples: dict[str, Artifact],
        dataset: str | None, calib_dataset: str | None, title: str, device: str = "auto") -> tuple[Artifact, bool]:
    """``samples``: one sample set per calibration mode (of the first model and seed), for the figures."""
    stage = STAGE
    keyed = sorted((r["metrics_sha256"], r["method"], column_of(r)) for r in records)
    key = stable_hash(stage.name, stage.code, identity(model, weights), keyed, sorted(samples.items()), title)
    out = store.root / stage.folder / f"{model.name}-{key}"

    def write(folder: Path) -> None:
        dev = resolve_device(device)
        loaded = load(model, weights, dev)
        methods = list(dict.fromkeys(r["method"] for r in records))
        columns = list(dict.fromkeys(column_of(r) for r in records))
        summary = summarize(records)
        comparisons = paired_comparisons(records)
        summary = {**summary, "methods": methods, "columns": columns, "comparisons": comparisons,
                   "range_vs_real": range_ratios(records, lambda r: activation_scales(r["quantized"]))}
        summary["findings"] = findings(summary)
        sets = {name: (s.images, s.labels) for name, s in ((n, read_samples(a.verify())) for n, a in samples.items())}
        data = model_data(loaded, dataset, calib_dataset)
        if data.calib_set is not None and "real" not in sets:
            # the figures' real row: up to 32 training images (a small train/ gives what it holds)
            sets = {"real": first_images(data.calib_set, min(32, len(data.calib_set)), 0), **sets}
        test_images = first_images(data.eval_set, min(32, len(data.eval_set)), 0)[0]
        sample_grid(sets, loaded.spec, folder / "samples.png",
                    agreement={name: as_labelled(loaded.model, imgs.to(dev), labels) for name, (imgs, labels) in sets.items()})
        accuracy_vs_bits({m: {c: (v["mean"], v["std"]) for c, v in summary["top1"][m].items()} for m in methods},
                         columns, folder / "accuracy.png", fp32=summary["fp32_top1"])
        paired_differences(comparisons, folder / "differences.png")
        entropies = {"real (test images)": entropy_per_block(loaded.model, test_images.to(dev)),
                     **{name: entropy_per_block(loaded.model, imgs.to(dev)) for name, (imgs, _) in sets.items()}}
        similarity_histograms({name: patch_similarities(loaded.model, imgs.to(dev)) for name, (imgs, _) in sets.items()},
                              folder / "similarity.png", entropies=entropies)
        n_blocks = len(next(iter(entropies.values())))
        metric = "k-NN top-1" if any("feature_cosine" in r for r in records) else "Top-1"
        models = sorted({r.get("train_seed", 0) for r in records})
        seeds = sorted({r["seed"] for r in records})
        text = "\n".join([
            f"# {title}",
            "",
            f"Model {model.name}; {len(models)} trained model(s) (train seeds {models}) × {len(seeds)} synthesis seed(s) "
            f"{seeds}; {len(records)} grid points; evaluated on {data.eval_desc}.",
            "",
            "## What the run shows",
            "",
            headline(summary, setting_notes(columns)),
            "",
            NOTATION,
            "",
            f"## {metric} (%), mean ± std over runs (FP32 {summary['fp32_top1']:.2f})",
            "",
            *([f"A headless backbone: {metric} is the weighted vote of the nearest training images (`eval.knn_k`) by the "
               "cosine of its pooled features, each model indexing with its own features; every "
               "top-1 below is that k-NN top-1.", ""] if metric != "Top-1" else []),
            accuracy_table([{**r, "column": column_of(r)} for r in records], methods, columns, row_key="method",
                           fp32=summary["fp32_per_model"]),
            "",
            "## Paired differences: top-1 points, 95 % interval (bootstrap over runs and test images)",
            "",
            "Paired by trained model, synthesis seed and test image. ≈: the interval covers 0, so these runs "
            "cannot tell the two apart.",
            "",
            comparison_table(comparisons) if comparisons else "(needs two calibration modes on the same runs)",
            "",
            "## Patch-similarity entropy per block (official estimator; higher = more diverse)",
            "",
            "Per block, the differential entropy (nats) of the cosine similarities between the patch tokens "
            "after self-attention, on a batch of images: the quantity PSAQ-ViT's synthesis raises. Rows: "
            "*real (test images)*, the first 32 images of the evaluation set (what the model is scored on); "
            "*real*, the calibration images of the `real` method (up to 32 training images; 32 training "
            "images when the grid has no `real`); every other row, that method's calibration images for the "
            "first synthesis seed of the first trained model (`gaussian`: noise).",
            "",
            markdown_table(["images", *(f"block {b}" for b in range(n_blocks))],
                           [[n, *(f"{v:.2f}" for v in e)] for n, e in entropies.items()]),
            "",
            "![calibration images](samples.png)",
            "![patch similarity per block](similarity.png)",
            "![top-1 per bit setting](accuracy.png)",
            "![paired differences](differences.png)",
            "",
        ])
        (folder / "benchmark.md").write_text(text)
        write_json(folder / "summary.json", {**summary, "entropy_per_block": entropies, "models": models,
                                             "seeds": seeds, "points": len(records), "images": data.eval_desc})
        write_json(folder / "metrics.json", tracked_metrics(summary))
        accuracy, differences = plot_rows(summary)
        write_json(folder / "accuracy.json", accuracy)
        write_json(folder / "differences.json", differences)

    return store.publish_dir(out, write)


def publish_view(report: Artifact, folder: str | Path) -> dict[str, Path]:
    """Copy a report's files to ``folder`` (``reports/``): the latest run's report, by fixed names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in FILES:
        src = Path(report.path) / name
        tmp = folder / f".{name}.{src.stat().st_mtime_ns}.partial"
        shutil.copyfile(src, tmp)
        (folder / name).unlink(missing_ok=True)
        tmp.replace(folder / name)
        out[name] = folder / name
    return out
