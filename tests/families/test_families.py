"""Model families are plug-ins: quantization and synthesis look a model's family up and import none."""

import pytest
import torch

from psaq import codehash
from psaq.errors import ConfigError
from psaq.families import FAMILIES, Family, family_of, register
from psaq.families.vit import VIT
from tests.tiny import tiny_deit, tiny_swin, tiny_vit

FAMILY_FILES = {"psaq/families/vit.py", "psaq/families/swin.py", "psaq/families/beit.py", "psaq/families/builtin.py"}


def _files(module):
    return {p.relative_to(codehash.ROOT).as_posix() for p in codehash.closure(module)}


@pytest.mark.parametrize("module", ["psaq.quant", "psaq.quant.quantize", "psaq.quant.reconstruct", "psaq.quant.fold",
                                    "psaq.synth", "psaq.synth.hooks", "psaq.synth.optimize", "psaq.models"])
def test_the_library_imports_no_family(module):
    assert not _files(module) & FAMILY_FILES


def test_the_family_files_import_no_quantization_code():
    # the samples stage runs them (it hooks the family's attention) and must not be keyed by quantizer code
    for name in ("psaq.families.vit", "psaq.families.swin", "psaq.families.beit"):
        assert not {f for f in _files(name) if f.startswith("psaq/quant/")}, name
    assert not {f for f in _files("psaq.stages.samples") if f.startswith("psaq/quant/")}


@pytest.mark.parametrize("factory, name", [(tiny_vit, "vit"), (tiny_deit, "vit"), (tiny_swin, "swin")])
def test_each_built_in_model_finds_its_family(factory, name):
    assert family_of(factory()).name == name


def test_a_model_of_no_family_is_one_line_naming_the_known_ones():
    with pytest.raises(ConfigError) as err:
        family_of(torch.nn.Linear(2, 2))
    assert "Linear belongs to no psaq model family (known: beit, swin, vit)" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_family_whose_block_has_no_wrapper_is_refused():
    with pytest.raises(ValueError, match="no wrapper for its block type"):
        register(Family("broken", VIT.model_types, VIT.attention_types, VIT.block_types, {}, {}, (), (), 0.2))
    assert "broken" not in FAMILIES


def test_per_family_synthesis_rates_are_the_papers():
    assert FAMILIES.get("vit").synthesis_lr == 0.20 and FAMILIES.get("swin").synthesis_lr == 0.25
