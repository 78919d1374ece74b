"""A bit setting, typed: the grid's ``W4A4+repq`` is 4-bit weights, 4-bit activations, site set ``repq``.

The tag is how params.yaml, DVC stage names, artifact names and tables spell a setting; code
carries the ints and the site set, and derives the tag from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psaq.errors import ConfigError

# the whole tag: fullmatch, so "W8A8\n" is refused; "+name" picks the activation site set. Not
# "@": DVC names a grid stage `stage@value-value-…` and cannot find one whose value holds "@"
BITS_PATTERN = re.compile(r"W([2-8])A([2-8])(?:\+([a-z0-9][a-z0-9_-]*))?")


@dataclass(frozen=True)
class BitSetting:
    w_bits: int
    a_bits: int
    sites: str | None = None  # None: the run's ``quant.sites``

    @classmethod
    def parse(cls, tag: str) -> BitSetting:
        """``"W4A8"`` → (4, 8, None); ``"W4A4+repq"`` → (4, 4, "repq"). The site set's name is
        checked where site sets are known (``psaq.params.parse_setting``)."""
        match = BITS_PATTERN.fullmatch(str(tag))
        if not match:
            earlier = BITS_PATTERN.fullmatch(str(tag).replace("@", "+", 1))
            hint = f" (write {str(tag).replace('@', '+', 1)}: a site set follows '+')" if earlier else ""
            raise ConfigError(f"bit setting '{tag}' must look like W4A8 (weights then activations, 2..8 each), "
                              f"optionally with a site set: W4A4+repq{hint}")
        return cls(int(match.group(1)), int(match.group(2)), match.group(3))

    @property
    def tag(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}" + (f"+{self.sites}" if self.sites else "")
