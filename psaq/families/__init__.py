"""Model families as plug-ins: what quantization and synthesis need to know about an architecture.

A ``Family`` names a timm architecture's module types and psaq's decisions about them: which
modules synthesis hooks, how quantization wraps and taps them, which sites each site set puts
where, the blocks reconstruction tunes and folding folds into, and the per-family synthesis
rate. ``psaq.quant`` and ``psaq.synth`` look a model's family up here and import none.

The built-in families (one file each: ViT/DeiT, Swin, BEiT) register themselves when
``psaq.families.builtin`` is imported, which the first lookup (``families``, ``family_of``) does.
A new family is one file that builds a ``Family`` and calls ``register``, plus one line in
``builtin.py``. A family declares the sites it has beyond the core ones and which of them
``repq`` reads. A stage is keyed on the file of its model's family only, so a new or edited
family re-keys no other family's results.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from torch import nn

from psaq.errors import ConfigError
from psaq.registry import Registry
from psaq.site_names import CORE_SITES, MATMUL_INPUTS

# A wrapper takes the float module, the QuantConfig and the site plan, and returns the module
# that takes its place (itself, for a wrapper that only adds taps around it).
Wrapper = Callable[..., nn.Module]
# (input sites, output sites) of a child by its role: (parent type, attribute name)
Role = tuple[tuple[str, ...], tuple[str, ...]]


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[type[nn.Module], ...]  # top-level models, matched by isinstance
    attention_types: tuple[type[nn.Module], ...]  # synthesis hooks the input of their ``proj``
    block_types: tuple[type[nn.Module], ...]  # the float blocks reconstruction matches, by exact type
    wrappers: Mapping[type[nn.Module], Wrapper]  # by exact type: a subclass may change forward()
    roles: Mapping[tuple[type[nn.Module], str], Role]
    # the site names of the paper's set and of psaq's compact set (``psaq.quant.sites`` builds every
    # set from what the family declares)
    official_sites: tuple[str, ...]
    compact_sites: tuple[str, ...]
    synthesis_lr: float  # the paper's Adam rate for this family
    # the sites this family has beyond the core ones (``psaq.quant.sites.CORE_SITES``), with the tensor each is
    site_names: Mapping[str, str] = field(default_factory=dict)
    # the inputs of every matrix product (what ``repq`` quantizes; integer kernels read them)
    matmul_inputs: tuple[str, ...] = MATMUL_INPUTS
    # site → (the LayerNorm's path in the block wrapper, the paths of the linear layers reading it):
    # the norms ``repq`` calibrates per channel and folds
    fold_paths: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)

    def sites(self) -> tuple[str, ...]:
        """Every site name this family's declarations use."""
        roles = (site for inputs, outputs in self.roles.values() for site in (*inputs, *outputs))
        return tuple(dict.fromkeys((*self.official_sites, *self.compact_sites, *self.matmul_inputs,
                                    *self.fold_paths, *roles)))

    @property
    def module(self) -> str:
        """The module that registered this family: its code keys the family's results (a family may
        reuse another's wrappers, so theirs do not say where it lives)."""
        return _REGISTERED_BY[self.name]

    @property
    def quantized_block_types(self) -> tuple[type[nn.Module], ...]:
        return tuple(self.wrappers[t] for t in self.block_types)

    @property
    def wrapper_types(self) -> tuple[type[nn.Module], ...]:
        return tuple(w for w in self.wrappers.values() if isinstance(w, type))


FAMILIES: Registry[Family] = Registry("model family")
_REGISTERED_BY: dict[str, str] = {}  # family name → the module whose code called ``register``


def register(family: Family) -> Family:
    missing = [t.__name__ for t in family.block_types if t not in family.wrappers]
    if missing:
        raise ValueError(f"family '{family.name}': no wrapper for its block type(s) {', '.join(missing)}")
    undeclared = [s for s in family.sites() if s not in CORE_SITES and s not in family.site_names]
    if undeclared:
        raise ValueError(f"family '{family.name}' uses site(s) {', '.join(undeclared)} that are neither core "
                         "sites nor in its site_names")
    registered = FAMILIES.register(family.name)(family)
    _REGISTERED_BY[family.name] = sys._getframe(1).f_globals.get("__name__", "")
    return registered


def families() -> Iterator[Family]:
    """Every registered family, psaq's built-in ones first: they register on the first lookup, so a
    user's ``quantize_`` or ``synthesize`` on a timm model needs no import of its own."""
    # by name, not an import statement: the code hash of a module (its cache key, psaq.codehash)
    # follows import statements, and quantization and synthesis code must not be keyed by the family
    # files; the stages that run families import psaq.families.builtin themselves, and are
    importlib.import_module("psaq.families.builtin")  # registers the built-in families; a no-op after
    return (FAMILIES.get(name) for name in FAMILIES)


def family_of(model: nn.Module) -> Family:
    """The registered family of ``model`` (quantized in place or float)."""
    for family in families():
        if isinstance(model, family.model_types):
            return family
    known = ", ".join(FAMILIES)
    raise ConfigError(f"{type(model).__name__} belongs to no psaq model family (known: {known}); "
                      "psaq has no quantizer sites or synthesis hooks for it")
