"""Write the README's Fashion-MNIST tables from the benchmark's summaries (never by hand).

    .venv/bin/python benchmarks/readme_tables.py          # after `make benchmark`

Reads ``reports/<model>/summary.json`` for each Fashion-MNIST model, the training logs kept
beside the trained models and ``reports/benchmark-run.json`` (the run's time against its
estimate), replaces the text between the README's ``<!-- fashion-tables:begin -->`` and
``<!-- fashion-tables:end -->`` markers, and copies the summaries, reports and run record to
``benchmarks/results/fashion/`` to be committed.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {"fashion-vit": "DeiT-layout ViT (28×28, patch 7: 16 tokens + class token)",
          "fashion-swin": "Swin (28×28, patch 2: 4 windows of 7×7, then 1 after merging)"}
BEGIN, END = "<!-- fashion-tables:begin -->", "<!-- fashion-tables:end -->"
RESULTS = REPO / "benchmarks" / "results" / "fashion"
COMPARISONS = [("psaq", "gaussian"), ("psaq", "psaq-noent"), ("psaq", "real"), ("psaq-unique-pairs", "psaq"),
               ("psaq", "gaussian-clamped")]
METHODS = ["real", "psaq", "psaq-unique-pairs", "psaq-noent", "gaussian", "gaussian-clamped"]


def table(header, rows) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def training(model: str) -> list[str]:
    logs = sorted((REPO / "models").glob(f"{model}-m*.safetensors.training.json"))
    out = []
    for log in logs:
        info = json.loads(log.read_text())
        seed = json.loads(info["config"]["train_config"])["seed"]
        out.append(f"seed {seed}: {info['test_top1']:.2f} % in {info['wall_s'] / 60:.1f} min")
    return out


ENTROPY_ROWS = ["real (test images)", *METHODS]


def grid_order(model: str, columns: list[str]) -> list[str]:
    """The summary's columns in the order the model's params file lists its bit settings."""
    import yaml

    params = REPO / "benchmarks" / f"{model}.yaml"
    listed = yaml.safe_load(params.read_text())["grid"]["bits"] if params.is_file() else []
    return sorted(columns, key=lambda c: (listed.index(c) if c in listed else len(listed), c))


def section(model: str, summary: dict) -> str:
    top1 = summary["top1"]
    columns = grid_order(model, list(next(iter(top1.values())).keys()))
    rows = []
    for m in METHODS:
        if m in top1:
            rows.append([m, *(f"{top1[m][c]['mean']:.2f} ± {top1[m][c]['std']:.2f}" if c in top1[m] else "–"
                              for c in columns)])
    cells = {(c["a"], c["b"], c["column"]): c for c in summary["comparisons"]}
    diff_rows = []
    for a, b in COMPARISONS:
        if not any((a, b, col) in cells for col in columns):
            continue  # a comparison of methods this grid did not run
        line = [f"{a} − {b}"]
        for col in columns:
            c = cells.get((a, b, col))
            line.append("–" if c is None else f"{c['mean']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]" + ("" if c["decided"] else " ≈"))
        diff_rows.append(line)
    n_runs = next(iter(summary["comparisons"]), {}).get("runs", "?")
    ent = summary["entropy_per_block"]
    blocks = len(next(iter(ent.values())))
    names = sorted(ent, key=lambda n: ENTROPY_ROWS.index(n) if n in ENTROPY_ROWS else len(ENTROPY_ROWS))
    ent_rows = [[name, *(f"{v:.2f}" for v in ent[name])] for name in names]
    fp32 = ", ".join(f"{v:.2f}" for v in summary["fp32_per_model"])
    return "\n".join([
        f"#### {model}: {MODELS[model]}",
        "",
        f"FP32 top-1 of the {len(summary['fp32_per_model'])} trained models: {fp32} (training: "
        + "; ".join(training(model)) + "). "
        f"{len(summary['seeds'])} synthesis seeds each, {summary['points']} grid points, 10,000 test images.",
        "",
        "Top-1 (%), mean ± std over runs (trained model × synthesis seed):",
        "",
        table(["calib", *columns], rows),
        "",
        f"Paired differences in top-1 points, 95 % interval (bootstrap over runs and test images, n = {n_runs} runs); "
        "≈: the interval covers 0, these runs cannot tell the two apart:",
        "",
        table(["difference", *columns], diff_rows),
        "",
        "Patch-similarity entropy per block (official estimator), first model, seed 0:",
        "",
        table(["images", *(f"block {b}" for b in range(blocks))], ent_rows),
    ])


def main() -> int:
    parts = []
    for model in MODELS:
        path = REPO / "reports" / model / "summary.json"
        if not path.is_file():
            print(f"{path} is missing: run make benchmark first", file=sys.stderr)
            return 2
        parts.append(section(model, json.loads(path.read_text())))
    run = REPO / "reports" / "benchmark-run.json"
    if run.is_file():
        info = json.loads(run.read_text())
        parts.insert(0, f"This run: {info['wall_s'] / 60:.1f} min on {info['cpus']} cores (estimated before it "
                        f"started, cold: {info['estimated_cold_s'] / 60:.1f} min), finished {info['finished']}; "
                        "what the store held was reused.")
    readme = REPO / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        print(f"README.md has no {BEGIN} … {END} markers", file=sys.stderr)
        return 2
    body = f"{BEGIN}\n<!-- written by benchmarks/readme_tables.py from reports/*/summary.json -->\n\n" + "\n\n".join(parts) + f"\n\n{END}"
    readme.write_text(re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: body, text, flags=re.S))
    for model in MODELS:
        (RESULTS / model).mkdir(parents=True, exist_ok=True)
        for name in ("summary.json", "benchmark.md", "accuracy.png", "differences.png", "similarity.png"):
            if (REPO / "reports" / model / name).is_file():
                shutil.copyfile(REPO / "reports" / model / name, RESULTS / model / name)
    if run.is_file():
        shutil.copyfile(run, RESULTS / run.name)
    print("README.md: Fashion-MNIST tables written from reports/fashion-vit and reports/fashion-swin; "
          f"summaries copied to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
