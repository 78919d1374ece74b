"""What a stage declares about itself: its name, the params.yaml sections it reads, the stages it
reads from, its grid dimensions, where its output lives. Each stage module declares its own
``STAGE``; ``psaq.stages.graph`` collects them. A stage's code (part of its cache key) is its
module's import closure, so its declaration is part of its own key and of no other stage's.
"""

from __future__ import annotations

from dataclasses import dataclass

from psaq.codehash import ROOT, closure, code_hash
from psaq.setting import BitSetting


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    params: tuple[str, ...]  # params.yaml sections it reads (grid coordinates come from ``matrix``)
    needs: tuple[str, ...]  # upstream stages whose outputs it reads
    matrix: tuple[str, ...]  # grid dimensions it runs once per value of
    views: tuple[str, ...]  # DVC outs, formatted with the matrix item
    folder: str  # where the stage's artifacts live in the store
    passes_as: str  # the argument under which downstream stages receive its output
    kind: str = "outs"  # outs | metrics

    @property
    def code(self) -> str:
        return code_hash(self.module)

    def code_files(self) -> list[str]:
        return [p.relative_to(ROOT).as_posix() for p in closure(self.module)]

    def coords(self, point) -> dict:
        """The point's coordinates along this stage's grid dimensions (what its views are formatted with)."""
        return {k: getattr(point, k) for k in self.matrix}

    def item(self, point) -> tuple:
        """The same as a key: points with equal items share the stage's run."""
        return tuple(self.coords(point).values())


@dataclass(frozen=True)
class Point:
    """One grid point, typed: the bits are ints and the site set a field of its own. Its
    coordinates (``POINT``: stage matrices, DVC views, records, tables) spell the setting as one
    tag (``bits``: ``W4A4+repq``), derived here."""

    train_seed: int
    method: str
    seed: int
    w_bits: int
    a_bits: int
    observer: str
    sites: str | None = None  # None: the run's ``quant.sites``

    @classmethod
    def parse(cls, train_seed: int, method: str, seed: int, bits: str, observer: str) -> Point:
        """The point a grid's coordinates name, the setting given as its tag (``W4A8``, ``W4A4+repq``)."""
        setting = BitSetting.parse(bits)
        return cls(train_seed, method, seed, setting.w_bits, setting.a_bits, observer, setting.sites)

    @property
    def setting(self) -> BitSetting:
        return BitSetting(self.w_bits, self.a_bits, self.sites)

    @property
    def bits(self) -> str:
        return self.setting.tag

    @property
    def name(self) -> str:
        return f"{self.method}-s{self.seed}-{self.bits}-{self.observer}-m{self.train_seed}"

    @property
    def coords(self) -> dict:
        return {k: getattr(self, k) for k in POINT}


# a grid point's coordinates, and the file stem of a per-point stage's views
POINT = ("train_seed", "method", "seed", "bits", "observer")
POINT_STEM = "m{train_seed}/{method}-s{seed}-{bits}-{observer}"
