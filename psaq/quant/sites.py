"""Quantizer sites as data: which activations are quantized, and how, is a value.

A *site* is one named tensor of a model's forward pass: the core ones every family has
(``CORE_SITES``) and those a family declares itself (``Family.site_names``). A
``SiteSpec`` puts a quantizer there: its kind, bits, granularity and observer (``None``
takes the ``QuantConfig``'s activation bits and observer). A *site set* is a recipe that
gives each model family (``psaq.families``) its specs from the site names the family declares;
``QuantConfig.sites`` names one.

``official`` (the default) is the set of PSAQ-ViT's code (``models/vit_quant.py``, ``layers_quant.py``,
``swin_quant.py``): 10 activation quantizers per ViT/DeiT block and 7 outside the blocks;
on Swin 12 per block (with the relative-position-bias table and the scores after adding
it), 2 per patch merging and 6 outside. ``compact`` is the smaller set psaq used before:
the input of every linear layer and of the patch convolution, the qkv output, q·kᵀ, the two
residual sums and the positional-embedding sum. ``log2`` and ``repq`` go beyond the paper
(see below).

Weights are not sites: every linear and convolution weight, the classifier's included, is
quantized at ``w_bits``, symmetric per output channel, in every set.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from psaq.errors import ConfigError
from psaq.quant.observers import OBSERVERS
from psaq.quant.primitives import check_bits
from psaq.quant.quantizers import QUANTIZER_KINDS, ActQuantizer
from psaq.registry import Registry
from psaq.site_names import CORE_SITES

if TYPE_CHECKING:
    from psaq.families import Family


def site_names() -> dict[str, str]:
    """Every site some registered family can quantize: the core and each family's own."""
    from psaq.families import families  # the registry, not a family file: no family is in this module's key

    names = dict(CORE_SITES)
    for family in families():
        names.update(family.site_names)
    return names


# uniform: asymmetric affine (the paper's); log2: 2^-round(-log2 p), for probabilities in [0, 1]
ACTIVATION_KINDS = tuple(QUANTIZER_KINDS)
# tensor: one scale; channel: one per channel (last axis); folded-channel: calibrated per channel,
# then folded into the LayerNorm before and the linear layer after, so inference is per tensor
GRANULARITIES = ("tensor", "channel", "folded-channel")
FOLDABLE = ("block.norm1", "block.norm2")  # a LayerNorm's output whose only reader is one linear layer


@dataclass(frozen=True)
class SiteSpec:
    """One quantizer at one site. ``bits``/``observer`` ``None``: the QuantConfig's activation settings."""

    site: str
    kind: str = "uniform"
    bits: int | None = None
    granularity: str = "tensor"
    observer: str | None = None

    def __post_init__(self) -> None:
        if self.site not in CORE_SITES:
            known = site_names()
            if self.site not in known:
                raise ConfigError(f"unknown quantizer site '{self.site}'; known: {', '.join(known)}")
        if self.kind not in ACTIVATION_KINDS:
            raise ConfigError(f"site '{self.site}': unknown quantizer kind '{self.kind}'; known: {', '.join(ACTIVATION_KINDS)}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"site '{self.site}': granularity must be one of {', '.join(GRANULARITIES)}")
        if self.granularity == "folded-channel" and self.site not in FOLDABLE:
            raise ConfigError(f"site '{self.site}': only {', '.join(FOLDABLE)} can fold per-channel scales "
                              "(a LayerNorm before, one linear layer after)")
        if self.kind == "log2" and self.granularity != "tensor":
            raise ConfigError(f"site '{self.site}': a log2 quantizer has no per-channel form")
        if self.bits is not None:
            check_bits(f"site '{self.site}' bits", self.bits)
        if self.observer is not None:
            OBSERVERS.get(self.observer)


def _specs(*names: str) -> tuple[SiteSpec, ...]:
    return tuple(SiteSpec(n) for n in names)


# A site set is a recipe: the specs it gives a model family (``psaq.families.Family``), built from
# the site names the family declares.
SiteRecipe = Callable[["Family"], tuple[SiteSpec, ...]]
SITE_SETS: Registry[SiteRecipe] = Registry("quantizer site set")
SITE_SETS.register("official")(lambda family: _specs(*family.official_sites))
SITE_SETS.register("compact")(lambda family: _specs(*family.compact_sites))
# Beyond the paper at low bits. ``log2``: the official set plus a log2 quantizer for the attention
# probabilities (FQ-ViT). ``repq``: the inputs of every matrix product (what integer kernels
# read), as RepQ-ViT quantizes a ViT: post-LayerNorm activations calibrated per channel and
# folded, the qkv output, the probabilities in log2, the attention output, the GELU output, the
# classifier's input; the residual stream, the scores before softmax and the logits stay float.
_LOG2 = SiteSpec("attn.probs", kind="log2")


def _replace(specs: tuple[SiteSpec, ...], *new: SiteSpec) -> tuple[SiteSpec, ...]:
    names = {s.site for s in new}
    return tuple(s for s in specs if s.site not in names) + new


SITE_SETS.register("log2")(lambda family: _replace(_specs(*family.official_sites), _LOG2))
SITE_SETS.register("repq")(lambda family: (*_specs(*family.matmul_inputs), _LOG2,
                                           *(SiteSpec(site, granularity="folded-channel") for site in family.fold_paths)))


def _key(site: str) -> str:
    return site.replace(".", "_")  # module names cannot hold dots


class Taps(nn.Module):
    """Activation quantizers by site name; a site without one passes its tensor through."""

    def __init__(self, plan, sites: Iterable[str | None]):
        super().__init__()
        self.quantizers = nn.ModuleDict()
        for site in sites:
            q = plan.quantizer(site) if site else None
            if q is not None:
                self.quantizers[_key(site)] = q

    def forward(self, site: str, x: torch.Tensor) -> torch.Tensor:
        q = self.quantizers[_key(site)] if _key(site) in self.quantizers else None
        return x if q is None else q(x)

    def __len__(self) -> int:
        return len(self.quantizers)


class SitePlan:
    """The specs of one model's quantization; counts where each site was placed."""

    def __init__(self, set_name: str, family: Family | None, config, specs: tuple[SiteSpec, ...] | None = None):
        self.set_name, self.family, self.config = set_name, family, config
        chosen = SITE_SETS.get(set_name)(family) if specs is None else specs
        self.specs = {s.site: s for s in chosen}
        self.placed: Counter[str] = Counter()

    @classmethod
    def of(cls, config, *sites: str) -> SitePlan:
        """A plan with just these sites, for a layer used on its own."""
        return cls("custom", None, config, tuple(SiteSpec(s) for s in sites))

    def __contains__(self, site: str) -> bool:
        return site in self.specs

    def quantizer(self, site: str):
        """A new activation quantizer for ``site``, or None when the set does not quantize it."""
        spec = self.specs.get(site)
        if spec is None:
            return None
        self.placed[site] += 1
        cfg = self.config
        axis = None if spec.granularity == "tensor" else -1
        return QUANTIZER_KINDS[spec.kind](spec.bits or cfg.a_bits, spec.observer or cfg.act_observer, site=site,
                                          axis=axis, folded=spec.granularity == "folded-channel",
                                          percentile=cfg.percentile)

    def taps(self, sites: Iterable[str | None]) -> Taps:
        """The quantizers of this plan at a module's taps: what a family's wrapper holds."""
        return Taps(self, sites)

    def check_complete(self, model_name: str, absent: tuple[str, ...] = ()) -> None:
        """Every spec of the set must have found its tensor: a site quantized nowhere is a silent no-op.
        ``absent``: sites the model lacks by construction (a headless backbone has no classifier input)."""
        missing = [s for s in self.specs if not self.placed[s] and s not in absent]
        if missing:
            raise ConfigError(f"quantizer site(s) {', '.join(missing)} of set '{self.set_name}' found no place in "
                              f"{model_name}, a model of the '{self.family.name if self.family else 'custom'}' family")


def site_counts(model: nn.Module) -> Counter[str]:
    """How many activation quantizers sit at each site of a quantized model."""
    return Counter(m.site for m in model.modules() if isinstance(m, ActQuantizer))
