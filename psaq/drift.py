"""A grid's results against an earlier run of it: what moved, and whether beyond the intervals.

The report keeps two small data files per model (``accuracy.json``: each method's mean top-1
per setting with its spread over runs; ``differences.json``: each paired difference with its
95 % interval). Comparing today's with the committed ones shows drift from a code or dependency
change. A method's top-1 is flagged when the new mean leaves the old mean's 95 % interval (t
over the runs); a paired difference when its new mean leaves the old interval. The same code on
the same machine reproduces every figure exactly, so any movement at all is reported.
"""

from __future__ import annotations

import math

from psaq.report import markdown_table


# Student's t 97.5 % quantiles for 1 to 30 degrees of freedom (a table: scipy.stats would add a
# second to every `make run`, which prints the comparison even when it computes nothing)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _t95(n: int) -> float:
    """The 97.5 % quantile of t with n − 1 degrees of freedom; beyond 30, the first two terms of
    its expansion around the normal's 1.95996."""
    df = n - 1
    if df < 1:
        return math.inf
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def compare(before: tuple[list[dict], list[dict]], now: tuple[list[dict], list[dict]]) -> dict:
    """``before``/``now``: (accuracy rows, difference rows) as ``psaq.report.plot_rows`` gives them.
    Returns {"rows": [...], "flagged": n, "moved": n, "only_before": [...], "only_now": [...]}."""
    rows = []
    (acc_before, diff_before), (acc_now, diff_now) = before, now
    old = {r["bar"]: r for r in acc_before}
    for r in acc_now:
        o = old.get(r["bar"])
        if o is None or o.get("n") != r.get("n"):  # another number of runs: another grid, not comparable
            continue
        n = int(o.get("n", 0))
        half = _t95(n) * o["std"] / math.sqrt(n) if n > 1 else 0.0
        low, high = o["top1"] - half, o["top1"] + half
        delta = r["top1"] - o["top1"]
        rows.append({"what": f"top-1 {r['method']}", "setting": r["setting"], "before": o["top1"], "now": r["top1"],
                     "delta": round(delta, 2), "low": round(low, 2), "high": round(high, 2),
                     "flagged": not (low <= r["top1"] <= high) if n > 1 else delta != 0})
    old = {r["bar"]: r for r in diff_before}
    for r in diff_now:
        o = old.get(r["bar"])
        if o is None or o.get("runs") != r.get("runs"):
            continue
        delta = r["difference"] - o["difference"]
        rows.append({"what": r["comparison"], "setting": r["setting"], "before": o["difference"],
                     "now": r["difference"], "delta": round(delta, 2), "low": o["low"], "high": o["high"],
                     "flagged": not (o["low"] <= r["difference"] <= o["high"])})
    bars_before = {r["bar"] for r in acc_before + diff_before}
    bars_now = {r["bar"] for r in acc_now + diff_now}
    return {"rows": rows, "flagged": sum(r["flagged"] for r in rows), "moved": sum(r["delta"] != 0 for r in rows),
            "only_before": sorted(bars_before - bars_now), "only_now": sorted(bars_now - bars_before)}


def summary_line(result: dict, against: str) -> str:
    rows = result["rows"]
    if not rows:
        return f"no figure in common with {against}: nothing to compare"
    if not result["moved"]:
        return f"all {len(rows)} figures equal {against}'s"
    flagged = result["flagged"]
    return (f"{result['moved']} of {len(rows)} figures moved from {against}'s; "
            + (f"{flagged} beyond the committed intervals (flagged)" if flagged else "all within the committed intervals"))


def table(result: dict) -> str:
    """The figures that moved (or every figure, when none did not), flagged ones marked ⚑."""
    rows = [r for r in result["rows"] if r["delta"] != 0] or result["rows"]
    return markdown_table(["figure", "setting", "before", "now", "change", "before's 95 % interval", ""],
                          [[r["what"], r["setting"], f"{r['before']:.2f}", f"{r['now']:.2f}", f"{r['delta']:+.2f}",
                            f"[{r['low']:.2f}, {r['high']:.2f}]", "⚑" if r["flagged"] else ""] for r in rows])
