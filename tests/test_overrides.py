"""One table of overrides serves the command line and the quantize deployment."""

import inspect

import pytest

from psaq.cli import build_parser
from psaq.errors import ConfigError
from psaq.overrides import OVERRIDES, apply_overrides
from psaq.params import Params

# flags that are not settings: where to run, how to print, or read before the table (composite flags)
NOT_SETTINGS = {"command", "params", "store", "quiet", "debug", "out", "model_arg", "steps", "help"}


def _flag_dests(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest for a in sub._actions} - {"help"}


@pytest.mark.parametrize("command", ["quantize", "export"])
def test_every_settings_flag_is_in_the_one_table(command):
    assert _flag_dests(command) - NOT_SETTINGS <= set(OVERRIDES), sorted(_flag_dests(command) - NOT_SETTINGS - set(OVERRIDES))


def test_every_quantize_deployment_parameter_is_in_the_one_table():
    from flows.quantize import quantize

    names = set(inspect.signature(quantize.fn).parameters) - {"params_path"}
    assert names <= set(OVERRIDES), sorted(names - set(OVERRIDES))


def test_overrides_land_in_their_sections_and_none_leaves_the_file_s_value():
    base = Params()
    got = apply_overrides(base, {"w_bits": 4, "observer": "mse", "calib": "gaussian", "v2_rounds": 2, "seed": None})
    assert (got.quant.w_bits, got.quant.act_observer, got.synthesis.method, got.adaptive.rounds) == (4, "mse", "gaussian", 2)
    assert got.synthesis.seed == base.synthesis.seed and got.quant.a_bits == base.quant.a_bits
    assert apply_overrides(base, {}) == base


def test_a_bad_override_is_refused_by_its_section():
    with pytest.raises(ConfigError, match="w_bits"):
        apply_overrides(Params(), {"w_bits": 1})


def test_the_cli_and_the_flow_make_the_same_params(tmp_path, monkeypatch):
    from flows.quantize import point_params
    from psaq.cli import _params

    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["quantize", "--w-bits", "4", "--a-bits", "4", "--calib", "gaussian", "--seed", "2",
                                      "--act-observer", "mse", "--device", "cpu"])
    from_cli, _ = _params(args)
    from_flow, point = point_params(Params(), w_bits=4, a_bits=4, calib="gaussian", seed=2, observer="mse", device="cpu")
    assert from_cli == from_flow and point.name == "gaussian-s2-W4A4-mse-m0"


def test_the_device_flag_leaves_params_yaml_s_device_when_not_given(tmp_path, monkeypatch):
    from psaq.cli import _params

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("runtime:\n  device: cpu\n")
    params, _ = _params(build_parser().parse_args(["quantize"]))
    assert params.runtime.device == "cpu"
