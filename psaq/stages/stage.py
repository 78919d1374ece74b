"""What a stage declares about itself: its name, the params.yaml sections it reads, the stages it
reads from, its grid dimensions, where its output lives. Each stage module declares its own
``STAGE``; ``psaq.stages.graph`` collects them. A stage's code (part of its cache key) is its
module's import closure, so its declaration is part of its own key and of no other stage's.
"""

from __future__ import annotations

from dataclasses import dataclass

from psaq.codehash import ROOT, closure, code_hash


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


# a grid point's coordinates, and the file stem of a per-point stage's views
POINT = ("train_seed", "method", "seed", "bits", "observer")
POINT_STEM = "m{train_seed}/{method}-s{seed}-{bits}-{observer}"
