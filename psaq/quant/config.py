"""QuantConfig: the quantization scheme of one run, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from psaq.errors import ConfigError
from psaq.quant.observers import OBSERVERS
from psaq.quant.primitives import MAX_BITS, MIN_BITS


def check_bits(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer from {MIN_BITS} to {MAX_BITS}, got {value!r}")
    if not MIN_BITS <= value <= MAX_BITS:
        raise ConfigError(f"{name} must be from {MIN_BITS} to {MAX_BITS}, got {value}")


@dataclass(frozen=True)
class QuantConfig:
    """Weights: symmetric per output channel. Activations: asymmetric per tensor (DESIGN §1).

    ``act_observer``/``weight_observer`` name an entry of ``OBSERVERS``
    (minmax is the paper's rule). ``percentile`` is used by the percentile observer.
    """

    w_bits: int = 8
    a_bits: int = 8
    act_observer: str = "minmax"
    weight_observer: str = "minmax"
    percentile: float = 99.99
    quantize_attention: bool = True  # q·kᵀ and softmax(q·kᵀ)·v sites

    def __post_init__(self) -> None:
        check_bits("w_bits", self.w_bits)
        check_bits("a_bits", self.a_bits)
        for field in ("act_observer", "weight_observer"):
            OBSERVERS.get(getattr(self, field))  # raises UnknownNameError with suggestions
        if not isinstance(self.percentile, (int, float)) or not 50.0 < float(self.percentile) <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile!r}")

    @property
    def tag(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"
