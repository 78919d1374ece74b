"""Aggregating results over seeds (mean ± std) and rendering them as Markdown tables."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from psaq.stats import paired_difference, unpack_correct


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = list(values)
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_mean_std(values: Sequence[float], digits: int = 1) -> str:
    if not values:
        return "–"
    m, s = mean_std(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def pivot(records: Iterable[dict], row_key: str, col_key: str, value: str) -> dict[str, dict[str, list[float]]]:
    """records → {row: {col: [values…]}} keeping first-seen order."""
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        table[str(r[row_key])][str(r[col_key])].append(float(r[value]))
    return table


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def accuracy_table(records: list[dict], rows: Sequence[str], cols: Sequence[str], row_key: str = "calib",
                   col_key: str = "column", value: str = "top1", fp32: Sequence[float] | None = None) -> str:
    """One row per calibration mode, one column per setting; cells are mean ± std over seeds."""
    grid = pivot(records, row_key, col_key, value)
    header = [row_key] + (["FP32"] if fp32 is not None else []) + list(cols)
    body = []
    for r in rows:
        cells = [r] + ([fmt_mean_std(fp32)] if fp32 is not None else [])
        cells += [fmt_mean_std(grid.get(r, {}).get(c, [])) for c in cols]
        body.append(cells)
    return markdown_table(header, body)


# Comparisons the benchmark draws: (a, b) reads "a minus b", paired by model, seed and test image.
COMPARISONS = (("psaq", "gaussian"), ("psaq", "psaq-noent"), ("psaq", "real"), ("psaq", "gaussian-clamped"),
               ("psaq-unique-pairs", "psaq"))


def column_of(record: dict) -> str:
    """``W4A8`` for the paper's minmax ranges, ``W4A8 mse`` for another observer."""
    observer = record.get("observer", "minmax")
    return record["bits"] if observer == "minmax" else f"{record['bits']} {observer}"


def paired_comparisons(records: list[dict], comparisons=COMPARISONS) -> list[dict]:
    """For each comparison and column: the paired difference of top-1 with its interval."""
    by_key: dict = defaultdict(dict)
    for r in records:
        by_key[(r["method"], column_of(r))][(r.get("train_seed", 0), r["seed"])] = r
    columns = list(dict.fromkeys(column_of(r) for r in records))
    out = []
    for a, b in comparisons:
        for col in columns:
            ra, rb = by_key.get((a, col), {}), by_key.get((b, col), {})
            runs = sorted(set(ra) & set(rb))
            if not runs or not all("correct" in ra[k] and "correct" in rb[k] for k in runs):
                continue
            d = paired_difference(np.stack([unpack_correct(ra[k]["correct"], int(ra[k]["count"])) for k in runs]),
                                  np.stack([unpack_correct(rb[k]["correct"], int(rb[k]["count"])) for k in runs]))
            out.append({"a": a, "b": b, "column": col, **d.as_dict()})
    return out


def comparison_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(r["column"] for r in rows))
    pairs = list(dict.fromkeys((r["a"], r["b"]) for r in rows))
    cells = {(r["a"], r["b"], r["column"]): r for r in rows}
    body = []
    for a, b in pairs:
        line = [f"{a} − {b}"]
        for c in columns:
            r = cells.get((a, b, c))
            if r is None:
                line.append("–")
            else:
                mark = "" if r["decided"] else " ≈"
                line.append(f"{r['mean']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]{mark}")
        body.append(line)
    n = rows[0]["runs"] if rows else 0
    return markdown_table([f"difference (n = {n} runs)", *columns], body)


def range_ratios(records: list[dict], scales_of, reference: str = "real") -> dict[str, dict[str, float]]:
    """{method: {column: ratio}}: how wide each method's calibrated activation ranges are against
    ``reference``'s on the same run and setting, the median over quantizer sites, averaged over
    runs (below 1: narrower, so the reference's values beyond them are clipped). ``scales_of``:
    record → {site: step} (``psaq.quant.serialize.activation_scales`` of its quantized model)."""
    by_run = {(r.get("train_seed", 0), r["seed"], column_of(r)): r for r in records if r["method"] == reference}
    ratios: dict = defaultdict(lambda: defaultdict(list))
    cache: dict[str, dict[str, float]] = {}

    def scales(rec: dict) -> dict[str, float]:
        if rec["quantized"] not in cache:
            cache[rec["quantized"]] = scales_of(rec)
        return cache[rec["quantized"]]

    for r in records:
        ref = by_run.get((r.get("train_seed", 0), r["seed"], column_of(r)))
        if ref is None or r["method"] == reference:
            continue
        mine, theirs = scales(r), scales(ref)
        sites = [s for s in mine if s in theirs and theirs[s] > 0]
        if sites:
            ratios[r["method"]][column_of(r)].append(statistics.median(mine[s] / theirs[s] for s in sites))
    return {m: {c: statistics.fmean(v) for c, v in cols.items()} for m, cols in ratios.items()}


def _interval(row: dict) -> str:
    return f"[{row['low']:+.2f}, {row['high']:+.2f}]"


def _cell(row: dict | None) -> str:
    return "–" if row is None else f"{row['mean']:+.2f} {_interval(row)}"


# what psaq − baseline says, by the sign of a decided difference or its absence (the paragraph's order)
VERDICTS = {
    "gaussian": ("psaq's images beat Gaussian noise by +{gain:.2f} points {interval}",
                 "Gaussian noise beats psaq's images by {gain:.2f} points {interval}",
                 "these runs cannot tell psaq's images from Gaussian noise ({cell})"),
    "real": ("they beat real training images by +{gain:.2f} {interval}",
             "they trail real training images by {gain:.2f} {interval}",
             "they match real training images ({cell})"),
    "psaq-noent": ("the patch-similarity entropy term adds +{gain:.2f} {interval}",
                   "the same optimization without the entropy term does better by {gain:.2f} {interval}",
                   "the entropy term makes no difference these runs can see ({cell})"),
}


def findings(summary: dict) -> dict[str, str]:
    """{column: one plain paragraph}: where psaq's images help at that setting, where they do not,
    and what the numbers say about why; from a report's summary (``top1``, ``fp32_top1``,
    ``comparisons``, optionally ``range_vs_real``)."""
    top1, fp32 = summary["top1"], summary["fp32_top1"]
    cmp = {(c["a"], c["b"], c["column"]): c for c in summary.get("comparisons", [])}
    ranges = summary.get("range_vs_real", {})
    columns = summary.get("columns") or list(dict.fromkeys(c for cols in top1.values() for c in cols))
    out = {}
    for col in columns:
        means = {m: cols[col]["mean"] for m, cols in top1.items() if col in cols}
        said: list[str] = []
        if means and max(means.values()) < fp32 - 20:
            out[col] = (f"every calibration set collapses (best {max(means.values()):.1f} % against FP32 {fp32:.1f} %): "
                        "at these bits the range rule decides, whatever the images, so this setting says nothing about "
                        "calibration data.")
            continue
        noise = cmp.get(("psaq", "gaussian", col))
        for baseline, (better, worse, same) in VERDICTS.items():
            row = cmp.get(("psaq", baseline, col))
            if row is None:
                continue
            phrase = (better if row["mean"] > 0 else worse) if row["decided"] else same
            said.append(phrase.format(gain=abs(row["mean"]), interval=_interval(row), cell=_cell(row)))
            spread = top1.get(baseline, {}).get(col, {}).get("std", 0.0)
            if baseline == "gaussian" and spread >= 3:
                said[-1] += f"; noise is erratic from draw to draw (std {spread:.1f} points over runs)"
        why = []
        if means and max(abs(fp32 - v) for v in means.values()) < 1.0:
            why.append(f"every set keeps top-1 within {max(abs(fp32 - v) for v in means.values()):.2f} points of FP32: "
                       "at these bits the calibration images barely matter on this model")
        noise_range, psaq_range = ranges.get("gaussian", {}).get(col), ranges.get("psaq", {}).get(col)
        noise_matters = noise is not None and (noise["decided"]
                                               or top1.get("gaussian", {}).get(col, {}).get("std", 0.0) >= 3)
        if noise_matters and noise_range is not None and psaq_range is not None and abs(noise_range - psaq_range) >= 0.05:
            why.append(f"noise's activation ranges are {noise_range:.2f}× as wide as real images' (median over the "
                       f"quantizer sites; psaq's {psaq_range:.2f}×), so real inputs beyond them are clipped"
                       if noise_range < psaq_range else
                       f"psaq's activation ranges are {psaq_range:.2f}× as wide as real images' (noise's "
                       f"{noise_range:.2f}×, median over the quantizer sites)")
        text = "; ".join(said) + "."
        if why:
            text += " Why: " + "; ".join(why) + "."
        out[col] = text if text.startswith("psaq") else text[0].upper() + text[1:]
    return out


def headline(summary: dict, setting_notes: dict[str, str] | None = None) -> str:
    """What a run shows, first: the paired differences per setting with their intervals, one
    paragraph per setting (``findings``), then top-1 per method. Markdown, also fit for a console."""
    top1 = summary["top1"]
    columns = summary.get("columns") or list(dict.fromkeys(c for cols in top1.values() for c in cols))
    cmp = {(c["a"], c["b"], c["column"]): c for c in summary.get("comparisons", [])}
    pairs = [b for b in ("gaussian", "real", "psaq-noent") if any(("psaq", b, c) in cmp for c in columns)]
    runs = next(iter(summary.get("comparisons", [])), {}).get("runs", 0)
    images = next(iter(summary.get("comparisons", [])), {}).get("images", 0)
    lines = []
    if pairs:
        lines += [f"What psaq's images change: top-1 difference in points, paired by run and test image, 95 % interval "
                  f"({runs} runs × {images:,} test images); ≈: the interval covers 0", "",
                  markdown_table(["setting", *(f"psaq − {b}" for b in pairs)],
                                 [[c, *(_cell(cmp.get(("psaq", b, c))) + ("" if cmp.get(("psaq", b, c), {}).get(
                                     "decided", True) else " ≈") for b in pairs)] for c in columns]), ""]
    for col, text in findings(summary).items():
        note = (setting_notes or {}).get(col)
        lines.append(f"- **{col}**{f' ({note})' if note else ''}: {text}")
    methods = summary.get("methods") or list(top1)
    lines += ["", f"Top-1 (%), mean ± std over runs (FP32 {summary['fp32_top1']:.2f}):", "",
              markdown_table(["method", *columns], [[m, *(f"{top1[m][c]['mean']:.2f} ± {top1[m][c]['std']:.2f}"
                                                         if c in top1[m] else "–" for c in columns)] for m in methods])]
    return "\n".join(lines)


def tracked_metrics(summary: dict) -> dict:
    """The few figures a grid is compared by across experiments (``dvc exp show``, ``dvc exp
    diff``): FP32 top-1 (``fp32``), then per setting each method's mean top-1 (``W8A8.psaq``) and each paired
    difference's mean (``W8A8.psaq_vs_gaussian``), rounded as printed. The intervals stay in
    summary.json and differences.json: a table row per experiment must fit a terminal."""
    out: dict = {"fp32": round(summary["fp32_top1"], 2)}
    for column in summary["columns"]:
        out[column] = {m: round(cols[column]["mean"], 2) for m, cols in summary["top1"].items() if column in cols}
        out[column].update({f"{r['a']}_vs_{r['b']}": round(r["mean"], 2) for r in summary["comparisons"]
                            if r["column"] == column})
    return out


def plot_rows(summary: dict) -> tuple[list[dict], list[dict]]:
    """The data behind the accuracy and difference figures, one row per bar (``dvc plots``)."""
    accuracy = [{"bar": f"{m} {c}", "setting": c, "method": m, "top1": round(cols[c]["mean"], 2),
                 "std": round(cols[c]["std"], 2), "n": cols[c]["n"]}
                for m, cols in summary["top1"].items() for c in summary["columns"] if c in cols]
    differences = [{"bar": f"{r['a']} - {r['b']} {r['column']}", "setting": r["column"], "comparison": f"{r['a']} - {r['b']}", "difference": round(r["mean"], 2),
                    "low": round(r["low"], 2), "high": round(r["high"], 2), "runs": r["runs"]}
                   for r in summary["comparisons"]]
    return accuracy, differences
