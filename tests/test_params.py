import dataclasses

import pytest
import yaml

from psaq.errors import ConfigError, UnknownNameError
from psaq.params import SECTIONS, load_params, params_from_dict, parse_setting
from psaq.setting import BitSetting


def test_repository_params_yaml_is_valid_and_maps_one_to_one():
    params = load_params("params.yaml")
    raw = yaml.safe_load(open("params.yaml"))
    assert set(raw) == set(SECTIONS)
    for section, values in raw.items():
        fields = {f.name for f in dataclasses.fields(SECTIONS[section])}
        assert set(values) <= fields
        for key, value in values.items():
            got = getattr(getattr(params, section), key)
            assert got == value or list(got) == value


@pytest.mark.parametrize("data,message", [
    ({"quant": {"w_bit": 4}}, "[quant]: unknown key 'w_bit'"),
    ({"quant": {"w_bits": "four"}}, "[quant] w_bits: expected int"),
    ({"quant": {"a_bits": 12}}, "[quant]: a_bits must be from 2 to 8"),
    ({"synthesis": {"steps_per_round": 1.5}}, "[synthesis] steps_per_round: expected int"),
    ({"grid": {"bits": ["W9A8"]}}, "must look like W4A8"),
    ({"grid": {"seeds": 3}}, "[grid] seeds: expected list"),
    ({"eval": {"batch_size": True}}, "[eval] batch_size"),
    ({"extra": {}}, "unknown section(s) extra"),
    ({"model": {"model_args": [1]}}, "[model] model_args: expected dict"),
    ({"quant": False}, "[quant] must be a mapping of keys to values, got False"),
    ({"grid": []}, "[grid] must be a mapping of keys to values, got []"),
    ({"quant": None}, "[quant] must be a mapping"),
    ({"grid": {"bits": ["W8A8", "W8A8"]}}, "[grid]: grid.bits lists 'W8A8' more than once"),
    ({"grid": {"seeds": [0, 1, 0]}}, "grid.seeds lists 0 more than once"),
    ({"grid": {"methods": ["psaq", "gaussian", "psaq"]}}, "grid.methods lists 'psaq' more than once"),
    ({"grid": {"train_seeds": [2, 2]}}, "grid.train_seeds lists 2 more than once"),
    ({"grid": {"observers": ["minmax", "minmax"]}}, "grid.observers lists 'minmax' more than once"),
    ({"grid": {"bits": ["W8A8\n"]}}, "must look like W4A8"),
    ({"grid": {"bits": [" W8A8"]}}, "must look like W4A8"),
    ({"grid": {"bits": ["w8a8"]}}, "must look like W4A8"),
    ({"train": {"weight_decay": -0.1}}, "[train]: train.weight_decay must be a number from 0 to inf, got -0.1"),
    ({"train": {"label_smoothing": 2.0}}, "train.label_smoothing must be a number from 0 to 1, got 2.0"),
    ({"train": {"max_shift_px": -1}}, "train.max_shift_px must be an integer of 0 or more, got -1"),
    ({"train": {"warmup_epochs": -2}}, "train.warmup_epochs must be an integer of 0 or more, got -2"),
])
def test_bad_params_name_the_section_and_key(data, message):
    with pytest.raises(ConfigError) as info:
        params_from_dict(data)
    assert message in str(info.value)


def test_unknown_method_in_grid_suggests():
    with pytest.raises(ConfigError, match=r"\[grid\]: unknown calibration mode 'psaq-noen'; did you mean psaq-noent"):
        params_from_dict({"grid": {"methods": ["psaq-noen"]}})


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="is a folder; give the YAML file in it"):
        load_params(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes("quant:\n  w_bits: 8  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 0xe9 at offset 25\); save it as UTF-8"):
        load_params(tmp_path / "latin1.yaml")
    (tmp_path / "bad.yaml").write_text("quant: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(tmp_path / "bad.yaml")


@pytest.mark.parametrize("text,message", [
    ("quant:\n  w_bits: 4\nquant:\n  a_bits: 6\n", "key 'quant' appears twice"),
    ("quant:\n  w_bits: 4\n  w_bits: 6\n", "key 'w_bits' appears twice"),
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("- a\n- b\n", "must be a mapping of sections, got list"),
])
def test_duplicate_keys_and_empty_files_are_refused(tmp_path, text, message):
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(tmp_path / "p.yaml")


def test_yaml_merge_keys_work_and_explicit_keys_override(tmp_path):
    (tmp_path / "p.yaml").write_text("quant:\n  <<: {w_bits: 4, a_bits: 6}\n  a_bits: 8\n")
    quant = load_params(tmp_path / "p.yaml").quant
    assert (quant.w_bits, quant.a_bits) == (4, 8)


def test_a_number_yaml_reads_as_text_says_how_to_write_it(tmp_path):
    (tmp_path / "p.yaml").write_text("synthesis:\n  lr: 1e30\n")
    with pytest.raises(ConfigError, match=r"lr: expected .*got '1e30' \(YAML reads 1e30 as text: write it as 1\.0e\+30\)"):
        load_params(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text("synthesis:\n  lr: 1.0e+30\n")  # the advice is valid YAML for the number
    assert load_params(tmp_path / "p.yaml").synthesis.lr == 1e30


def test_parse_setting():
    assert parse_setting("W4A8") == BitSetting(4, 8, None) and parse_setting("W4A8").tag == "W4A8"
    assert parse_setting("W4A4+repq") == BitSetting(4, 4, "repq") and parse_setting("W4A4+repq").tag == "W4A4+repq"
    with pytest.raises(ConfigError):
        parse_setting("4/8")
    with pytest.raises(ConfigError):
        parse_setting("W8A8\n")  # a trailing newline would end up in artifact names
    with pytest.raises(UnknownNameError, match="site set 'nosuch'; known: .*repq"):
        parse_setting("W4A4+nosuch")
    with pytest.raises(ConfigError, match=r"write W4A4\+repq: a site set follows '\+'"):
        parse_setting("W4A4@repq")  # DVC cannot name a stage whose value holds '@'


def test_a_grid_setting_with_a_site_set_reaches_the_quant_config():
    from psaq.pipeline import grid_points, quant_config

    params = params_from_dict({"grid": {"bits": ["W4A8", "W4A4+repq"], "methods": ["gaussian"], "seeds": [0]}})
    configs = {p.bits: quant_config(params, p) for p in grid_points(params)}
    assert (configs["W4A8"].w_bits, configs["W4A8"].a_bits, configs["W4A8"].sites) == (4, 8, params.quant.sites)
    assert (configs["W4A4+repq"].w_bits, configs["W4A4+repq"].a_bits, configs["W4A4+repq"].sites) == (4, 4, "repq")
