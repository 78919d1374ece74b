"""The final-state messages of flow runs, from records as the pipeline writes them."""

import pytest

from flows.outcome import artifact_key, grid_summary, one_line_failures, point_summary
from psaq.errors import ConfigError


def rec(method, bits, seed, top1, fp32=98.0):
    return {"method": method, "bits": bits, "seed": seed, "top1": top1, "fp32_top1": fp32, "agreement": 97.5,
            "metrics": f"metrics/{method}-{bits}-{seed}.json"}


def test_grid_summary_gives_the_mean_over_seeds_per_setting_and_method_in_grid_order():
    records = [rec("psaq", "W4A8", 0, 90.0), rec("gaussian", "W4A8", 0, 80.0), rec("psaq", "W4A8", 1, 92.0),
               rec("psaq", "W8A8", 0, 97.0)]
    text = grid_summary("digits-vit", records, "reports/digits-vit/benchmark.md")
    assert text == ("digits-vit: 4 points, mean top-1 % (FP32 98.00); W4A8: psaq 91.00, gaussian 80.00; "
                    "W8A8: psaq 97.00; report reports/digits-vit/benchmark.md")


def test_point_summary_names_the_point_its_figures_and_its_metrics_file():
    text = point_summary("fashion-vit", rec("psaq", "W4A4+repq", 2, 71.234, fp32=87.54))
    assert text == ("fashion-vit W4A4+repq psaq seed 2: top-1 71.23 % (FP32 87.54 %, agreement 97.50 %); "
                    "metrics metrics/psaq-W4A4+repq-2.json")


def test_artifact_keys_are_what_prefect_accepts_one_per_model():
    assert artifact_key("benchmark", "deit_small_patch16_224") == "benchmark-deit-small-patch16-224"
    assert artifact_key("quantize", "Fashion-ViT") == "quantize-fashion-vit"


def test_a_psaq_error_becomes_a_failed_state_carrying_it():
    @one_line_failures
    def run(ok):
        if not ok:
            raise ConfigError("a_bits must be from 2 to 8")
        return 1

    assert run(True) == 1
    state = run(False)
    assert state.is_failed() and state.message == "a_bits must be from 2 to 8"
    with pytest.raises(ConfigError):
        state.result()


def test_other_errors_are_not_swallowed():
    @one_line_failures
    def run():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        run()


def test_a_failed_runs_psaq_error_is_logged_without_its_traceback():
    # a deployment's flow-run process logs the error of a failed run with exc_info after the flow
    # returned ("Engine execution exited with unexpected exception")
    import logging

    from flows.entry import drop_psaq_tracebacks

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger = logging.getLogger("prefect.engine")
    handler = Keep()
    logger.addHandler(handler)
    try:
        drop_psaq_tracebacks()
        drop_psaq_tracebacks()  # once is enough; twice adds no second filter
        for exc in (ConfigError("bad"), RuntimeError("a bug")):
            try:
                raise exc
            except Exception:
                logger.error("Engine execution exited with unexpected exception %s", type(exc).__name__, exc_info=True)
    finally:
        logger.removeHandler(handler)
    assert seen == ["Engine execution exited with unexpected exception RuntimeError"]
    assert sum(type(f).__name__ == "_DropPsaqTracebacks" for f in logger.filters) == 1


def _quantized_file(tmp_path, rounds: dict) -> str:
    import json

    import torch
    from safetensors.torch import save_file

    from psaq.stages.reconstruct import HISTORY_KEY

    path = tmp_path / "quantized.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={HISTORY_KEY: json.dumps(rounds)})
    return str(path)


def test_a_v2_run_that_kept_an_earlier_round_says_so_in_its_summaries(tmp_path):
    kept = dict(rec("psaq-v2", "W4A4", 0, 70.0), quantized=_quantized_file(
        tmp_path, {"adaptive.entropy": [1.0] * 5, "adaptive.kept_round": [2]}))
    assert point_summary("fashion-swin", kept).endswith(
        "; warning: psaq-v2 kept round 2 of 5 (its student ended further from the teacher on images it never "
        "trained on; round 0 is the calibrated one)")
    assert "warning: psaq-v2 kept an earlier round than its last in 1 point(s)" in grid_summary(
        "fashion-swin", [kept, rec("psaq", "W4A4", 0, 76.0)])


def test_a_v2_run_that_ended_at_its_last_round_and_other_runs_carry_no_warning(tmp_path):
    (tmp_path / "a").mkdir()
    last = dict(rec("psaq-v2", "W4A4", 0, 74.0), quantized=_quantized_file(
        tmp_path / "a", {"adaptive.entropy": [1.0] * 5, "adaptive.kept_round": [5]}))
    (tmp_path / "b").mkdir()
    calibrated = dict(rec("psaq", "W4A4", 0, 66.0), quantized=_quantized_file(tmp_path / "b", {}))
    for r in (last, calibrated, rec("psaq", "W4A4", 1, 66.0)):
        assert "warning" not in point_summary("fashion-vit", r)
    assert "warning" not in grid_summary("fashion-vit", [last, calibrated])
