"""A run against an earlier one: what moved, and which figures left the earlier intervals."""

import math

from scipy.stats import t

from psaq.drift import compare, summary_line, table


def _acc(method, setting, top1, std=0.3, n=3):
    return {"bar": f"{method} {setting}", "setting": setting, "method": method, "top1": top1, "std": std, "n": n}


def _diff(b, setting, mean, low, high):
    return {"bar": f"psaq - {b} {setting}", "setting": setting, "comparison": f"psaq - {b}", "difference": mean,
            "low": low, "high": high, "runs": 3}


BEFORE = ([_acc("psaq", "W8A8", 87.41), _acc("gaussian", "W8A8", 86.57, std=0.18)],
          [_diff("gaussian", "W8A8", 0.84, 0.57, 1.12)])


def test_the_same_figures_compare_equal_and_nothing_is_flagged():
    result = compare(BEFORE, BEFORE)
    assert result["moved"] == 0 and result["flagged"] == 0 and len(result["rows"]) == 3
    assert summary_line(result, "the last commit") == "all 3 figures equal the last commit's"


def test_a_top1_is_flagged_only_beyond_the_t_interval_of_its_mean():
    half = t.ppf(0.975, 2) * 0.3 / math.sqrt(3)  # 95 % interval of a mean over 3 runs
    inside = compare(BEFORE, ([_acc("psaq", "W8A8", 87.41 + half - 0.01), BEFORE[0][1]], BEFORE[1]))
    outside = compare(BEFORE, ([_acc("psaq", "W8A8", 87.41 + half + 0.01), BEFORE[0][1]], BEFORE[1]))
    assert inside["moved"] == 1 and inside["flagged"] == 0
    assert outside["flagged"] == 1 and outside["rows"][0]["what"] == "top-1 psaq"
    assert "1 beyond the committed intervals" in summary_line(outside, "the last commit")


def test_a_difference_is_flagged_when_it_leaves_the_earlier_interval():
    moved = compare(BEFORE, (BEFORE[0], [_diff("gaussian", "W8A8", 1.20, 0.9, 1.5)]))
    [row] = [r for r in moved["rows"] if r["what"] == "psaq - gaussian"]
    assert row["flagged"] and row["delta"] == 0.36 and (row["low"], row["high"]) == (0.57, 1.12)
    assert "⚑" in table(moved) and "+0.36" in table(moved)


def test_figures_of_another_grid_are_listed_not_compared():
    other = ([_acc("psaq", "W4A8", 80.0), _acc("gaussian", "W8A8", 86.57, std=0.18, n=6)], [])
    result = compare(BEFORE, other)  # W8A8 gaussian over 6 runs: another grid's figure
    assert result["rows"] == [] and "psaq W4A8" in result["only_now"] and "psaq W8A8" in result["only_before"]
    assert "nothing to compare" in summary_line(result, "the last commit")


def test_the_t_quantiles_are_students():
    from psaq.drift import _t95

    for n in (2, 3, 4, 10, 31, 32, 60, 200):
        assert abs(_t95(n) - t.ppf(0.975, n - 1)) < 2e-3, n
