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
