"""What a run prints first: paired differences, a paragraph per setting, and the ranges behind them."""

import pytest

from psaq.report import findings, headline, plot_rows, range_ratios, tracked_metrics


def _cmp(b, column, mean, low, high, runs=3):
    return {"a": "psaq", "b": b, "column": column, "mean": mean, "low": low, "high": high, "runs": runs,
            "images": 10000, "decided": low > 0 or high < 0}


def _summary():
    top1 = {"psaq": {"W8A8": {"mean": 87.4, "std": 0.1, "n": 3}, "W4A4+repq": {"mean": 84.6, "std": 0.5, "n": 3}},
            "gaussian": {"W8A8": {"mean": 86.6, "std": 0.2, "n": 3}, "W4A4+repq": {"mean": 73.4, "std": 9.9, "n": 3}},
            "real": {"W8A8": {"mean": 87.5, "std": 0.0, "n": 3}, "W4A4+repq": {"mean": 85.3, "std": 0.3, "n": 3}},
            "psaq-noent": {"W8A8": {"mean": 87.4, "std": 0.1, "n": 3}, "W4A4+repq": {"mean": 85.4, "std": 0.3, "n": 3}}}
    return {"top1": top1, "fp32_top1": 87.54, "methods": ["psaq", "psaq-noent", "gaussian", "real"],
            "columns": ["W8A8", "W4A4+repq"],
            "comparisons": [_cmp("gaussian", "W8A8", 0.84, 0.57, 1.13), _cmp("real", "W8A8", -0.08, -0.28, 0.12),
                            _cmp("psaq-noent", "W8A8", -0.03, -0.2, 0.13),
                            _cmp("gaussian", "W4A4+repq", 11.17, -0.84, 18.2), _cmp("real", "W4A4+repq", -0.67, -1.35, -0.01),
                            _cmp("psaq-noent", "W4A4+repq", 2.5, 1.0, 4.0)],
            "range_vs_real": {"gaussian": {"W8A8": 0.80}, "psaq": {"W8A8": 0.87}}}


def test_each_setting_gets_a_paragraph_that_follows_its_intervals():
    said = findings(_summary())
    assert list(said) == ["W8A8", "W4A4+repq"]
    assert said["W8A8"].startswith("psaq's images beat Gaussian noise by +0.84 points [+0.57, +1.13]")
    assert "match real training images" in said["W8A8"] and "no difference these runs can see" in said["W8A8"]
    assert "0.80× as wide as real images'" in said["W8A8"] and "within 0.94 points of FP32" in said["W8A8"]
    four = said["W4A4+repq"]
    assert four.startswith("These runs cannot tell psaq's images from Gaussian noise (+11.17 [-0.84, +18.20])")
    assert "erratic from draw to draw (std 9.9" in four and "trail real training images by 0.67" in four
    assert "entropy term adds +2.50 [+1.00, +4.00]" in four and "Why" not in four  # no range figures for it


def test_a_setting_where_every_set_collapses_says_so_and_nothing_else():
    summary = _summary()
    for cols in summary["top1"].values():
        cols["W4A4+repq"]["mean"] = 20.0
    assert findings(summary)["W4A4+repq"].startswith("every calibration set collapses (best 20.0 %")


def test_a_decided_loss_is_said_as_a_loss():
    summary = _summary()
    summary["comparisons"][0] = _cmp("gaussian", "W8A8", -1.1, -1.5, -0.8)
    assert findings(summary)["W8A8"].startswith("Gaussian noise beats psaq's images by 1.10 points [-1.50, -0.80]")


def test_the_headline_leads_with_the_differences_in_grid_order():
    text = headline(_summary(), {"W8A8": "the official code's sites"})
    lines = text.splitlines()
    assert lines[0].startswith("What psaq's images change") and "3 runs × 10,000 test images" in lines[0]
    assert lines[2] == "| setting | psaq − gaussian | psaq − real | psaq − psaq-noent |"
    assert lines[4].startswith("| W8A8 | +0.84 [+0.57, +1.13] | -0.08 [-0.28, +0.12] ≈ |")
    assert lines[5].startswith("| W4A4+repq | +11.17 [-0.84, +18.20] ≈ |")
    assert "- **W8A8** (the official code's sites): psaq's images beat" in text
    assert text.index("What psaq's images change") < text.index("Top-1 (%)")
    assert "| psaq | 87.40 ± 0.10 | 84.60 ± 0.50 |" in text


def test_range_ratios_compare_each_method_with_real_on_the_same_run_and_setting():
    def rec(method, seed, scale):
        return {"method": method, "seed": seed, "bits": "W8A8", "quantized": f"{method}-{seed}", "scale": scale}

    records = [rec("real", 0, 2.0), rec("gaussian", 0, 1.0), rec("real", 1, 4.0), rec("gaussian", 1, 3.0),
               rec("psaq", 0, 2.0)]
    scales = {r["quantized"]: {"a": r["scale"], "b": 2 * r["scale"], "c": r["scale"]} for r in records}
    got = range_ratios(records, lambda r: scales[r["quantized"]])
    assert got["gaussian"]["W8A8"] == pytest.approx((0.5 + 0.75) / 2) and got["psaq"]["W8A8"] == pytest.approx(1.0)
    assert "real" not in got


def test_the_ranges_explain_a_setting_whether_or_not_its_interval_decides():
    summary = _summary()
    summary["range_vs_real"] = {"gaussian": {"W4A4+repq": 0.5, "W8A8": 0.86}, "psaq": {"W4A4+repq": 0.8, "W8A8": 0.87}}
    said = findings(summary)
    assert "Why: noise's activation ranges are 0.50× as wide as real images'" in said["W4A4+repq"]
    assert "activation ranges" not in said["W8A8"]  # 0.86 against 0.87: nothing to explain


def test_no_range_reason_is_given_for_a_difference_the_runs_do_not_show():
    summary = _summary()
    summary["comparisons"][0] = _cmp("gaussian", "W8A8", 0.05, -0.16, 0.25)
    summary["range_vs_real"] = {"gaussian": {"W8A8": 0.7}, "psaq": {"W8A8": 0.95}}
    assert "activation ranges" not in findings(summary)["W8A8"]


def test_tracked_metrics_are_the_printed_means_per_setting_and_nothing_wider():
    m = tracked_metrics(_summary())
    assert m["fp32"] == 87.54
    assert list(m) == ["fp32", "W8A8", "W4A4+repq"]
    assert m["W4A4+repq"]["gaussian"] == 73.4 and m["W8A8"]["psaq_vs_gaussian"] == 0.84
    assert m["W4A4+repq"]["psaq_vs_real"] == -0.67
    # one number per key: a row of `dvc exp show` per experiment, no intervals flattened into columns
    assert all(isinstance(v, float) for setting in ("W8A8", "W4A4+repq") for v in m[setting].values())
    assert len(m["W8A8"]) == 4 + 3


def test_plot_rows_carry_one_bar_each_with_its_interval():
    accuracy, differences = plot_rows(_summary())
    assert len(accuracy) == 8 and len({r["bar"] for r in accuracy}) == 8
    row = next(r for r in differences if r["bar"] == "psaq - gaussian W4A4+repq")
    assert (row["difference"], row["low"], row["high"]) == (11.17, -0.84, 18.2)
