"""Stage 6: the report: a Markdown table (mean ± std over seeds), plots, and a metrics summary."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from psaq.data import digits_split, first_images
from psaq.io import read_samples, write_json
from psaq.models.checkpoint import atomic_write
from psaq.plots import accuracy_vs_bits, sample_grid, similarity_histograms
from psaq.report import accuracy_table, mean_std, pivot
from psaq.synth.analysis import entropy_per_block, patch_similarities
from tasks.artifacts import Artifact, stage_cache_policy
from tasks.common import load_stage_model


def column(record: dict) -> str:
    return record["bits"] if record.get("observer", "minmax") == "minmax" else f"{record['bits']} {record['observer']}"


def fp32_per_model(records: list[dict]) -> list[float]:
    """One FP32 top-1 per trained model (every point of a model repeats it)."""
    return [v for _, v in sorted({(r.get("train_seed", 0), r["fp32_top1"]) for r in records})]


def summarize(records: list[dict]) -> dict:
    """{method: {column: {"mean", "std", "n"}}} plus the FP32 reference."""
    grid = pivot([{**r, "column": column(r)} for r in records], "method", "column", "top1")
    out = {m: {c: dict(zip(("mean", "std"), mean_std(v)), n=len(v)) for c, v in cols.items()} for m, cols in grid.items()}
    return {"top1": out, "fp32_top1": mean_std(fp32_per_model(records))[0]}


@task(name="report", cache_policy=stage_cache_policy(), persist_result=True)
def build_report(model: dict, checkpoint: Artifact | None, records: list[dict], samples: dict[str, Artifact],
                 runtime: dict, out: str, code: str) -> dict:
    """``samples`` maps a calibration mode to one of its sample sets (for the figures)."""
    out_dir = Path(out).parent
    methods = list(dict.fromkeys(r["method"] for r in records))
    columns = list(dict.fromkeys(column(r) for r in records))
    summary = summarize(records)
    n_seeds = len({r["seed"] for r in records})
    n_models = len({r.get("train_seed", 0) for r in records})
    table = accuracy_table([{**r, "column": column(r)} for r in records], methods, columns, row_key="method",
                           fp32=fp32_per_model(records))

    loaded, device = load_stage_model(model, checkpoint, runtime)
    sets = {name: read_samples(a.verify()).images for name, a in samples.items()}
    if loaded.dataset == "digits" and "real" not in sets:
        sets = {"real": first_images(digits_split("train"), 32, 0)[0], **sets}
    figures = {
        "samples": sample_grid(sets, loaded.spec, out_dir / "samples.png"),
        "similarity": similarity_histograms(
            {name: patch_similarities(loaded.model, imgs.to(device)) for name, imgs in sets.items()},
            out_dir / "similarity.png"),
        "accuracy": accuracy_vs_bits({m: {c: (v["mean"], v["std"]) for c, v in summary["top1"][m].items()} for m in methods},
                                     columns, out_dir / "accuracy.png", fp32=summary["fp32_top1"]),
    }
    entropies = {name: entropy_per_block(loaded.model, imgs.to(device)) for name, imgs in sets.items()}
    ent_rows = "\n".join(f"| {n} | " + " | ".join(f"{v:.2f}" for v in e) + " |" for n, e in entropies.items())
    n_blocks = len(next(iter(entropies.values())))
    text = "\n".join([
        f"# psaq benchmark: {loaded.name}",
        "",
        f"Top-1 (%) on the test split, mean ± std over {n_seeds} synthesis seed(s) × {n_models} model(s).",
        "",
        table,
        "",
        "## Patch-similarity entropy per block (higher = more diverse)",
        "",
        "| images | " + " | ".join(f"block {b}" for b in range(n_blocks)) + " |",
        "|---|" + "---|" * n_blocks,
        ent_rows,
        "",
        "![samples](samples.png)",
        "![similarity](similarity.png)",
        "![accuracy](accuracy.png)",
        "",
    ])
    atomic_write(out, lambda tmp: tmp.write_text(text))
    summary_path = write_json(out_dir / "summary.json", {**summary, "entropy_per_block": entropies})
    return {"markdown": Artifact.of(out), "table": table, "summary": Artifact.of(summary_path),
            "figures": {k: str(v) for k, v in figures.items()}}
