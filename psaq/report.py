"""Aggregating results over seeds (mean ± std) and rendering them as Markdown tables."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence


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
