"""QuantConfig: the quantization scheme of one run, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from psaq.errors import ConfigError
from psaq.quant.observers import OBSERVERS
from psaq.quant.primitives import check_bits
from psaq.quant.sites import SITE_SETS
from psaq.setting import BitSetting


@dataclass(frozen=True)
class QuantConfig:
    """Weights: symmetric per output channel. Activations: asymmetric per tensor, at the sites
    of the set ``sites`` names (``psaq.quant.sites``: ``official``, the default, or ``compact``).

    ``act_observer``/``weight_observer`` name an entry of ``OBSERVERS`` (minmax is the paper's
    rule). ``percentile`` is used by the percentile observer. ``calibrate_with_quantized_weights``
    (psaq's option) takes the activation ranges with the weights already rounded; the official
    code takes them on the float model.
    """

    w_bits: int = 8
    a_bits: int = 8
    act_observer: str = "minmax"
    weight_observer: str = "minmax"
    percentile: float = 99.99
    sites: str = "official"  # the name of a site set (SITE_SETS), not a list of sites (SITE_NAMES)
    calibrate_with_quantized_weights: bool = False

    def __post_init__(self) -> None:
        check_bits("w_bits", self.w_bits)
        check_bits("a_bits", self.a_bits)
        for field in ("act_observer", "weight_observer"):
            OBSERVERS.get(getattr(self, field))  # raises UnknownNameError with suggestions
        SITE_SETS.get(self.sites)
        if not isinstance(self.calibrate_with_quantized_weights, bool):
            raise ConfigError(f"calibrate_with_quantized_weights must be true or false, got {self.calibrate_with_quantized_weights!r}")
        if not isinstance(self.percentile, (int, float)) or not 50.0 < float(self.percentile) <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile!r}")

    @property
    def tag(self) -> str:
        return BitSetting(self.w_bits, self.a_bits).tag
