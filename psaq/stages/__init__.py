"""The stage graph, declared once: the Prefect flows, the DVC stages (``dvc.yaml`` is generated
from it) and the command line all run these stages, with these keys, into one store.

    data ─┐
    model ┴─► fp32 ──────────────────────────────┐
          └─► samples ─► calibrate ─► reconstruct ─► evaluate ─► report
                                             └─► export

``reconstruct`` runs PSAQ-ViT V2's teacher-student loop (``--calib psaq-v2``) and/or block
reconstruction (psaq's option); with neither it hands the calibrated model on unchanged.

Each stage is implemented by one module of this package. Its code is that module's import
closure inside psaq (``psaq.codehash``): it is part of the stage's cache key and its DVC
dependencies. ``params`` are the params.yaml sections the stage reads (grid coordinates such
as the method, seed or bit width come from ``matrix``; a section change that leaves the
stage's inputs as they were makes DVC run it, and the store then hands back the same artifact). ``view`` is the fixed path under
which DVC tracks the stage's latest output; the artifact itself lives in the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from psaq.codehash import ROOT, closure, code_hash


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    params: tuple[str, ...]
    needs: tuple[str, ...]
    matrix: tuple[str, ...]
    views: tuple[str, ...]  # DVC outs, formatted with the matrix item
    folder: str  # where the stage's artifacts live in the store
    kind: str = "outs"  # outs | metrics
    always_changed: bool = False  # DVC cannot see what it reads (files outside the project): it hashes them itself

    @property
    def code(self) -> str:
        return code_hash(self.module)

    def code_files(self) -> list[str]:
        return [p.relative_to(ROOT).as_posix() for p in closure(self.module)]


# params.yaml sections a stage reads (DVC needs each listed key to be present in the file, and
# params.yaml may leave keys to their defaults, so whole sections are listed)
POINT = ("train_seed", "method", "seed", "bits", "observer")
POINT_STEM = "m{train_seed}/{method}-s{seed}-{bits}-{observer}"

GRAPH: dict[str, Stage] = {s.name: s for s in (
    Stage("data", "psaq.stages.data", ("model", "runtime"), (), (),
          ("pipeline/data.json",), "pipeline", always_changed=True),
    Stage("model", "psaq.stages.model", ("model", "train"), (), ("train_seed",),
          ("pipeline/models/m{train_seed}.json",), "models", always_changed=True),
    Stage("fp32", "psaq.stages.fp32", ("eval", "runtime"), ("data", "model"), ("train_seed",),
          ("pipeline/fp32/m{train_seed}.json",), "metrics/fp32", kind="metrics"),
    Stage("samples", "psaq.stages.samples", ("synthesis", "runtime"), ("data", "model"),
          ("train_seed", "method", "seed"), ("pipeline/samples/m{train_seed}/{method}-s{seed}.parquet",), "data/samples"),
    Stage("calibrate", "psaq.stages.calibrate", ("quant", "runtime"), ("model", "samples"), POINT,
          (f"pipeline/quantized/{POINT_STEM}.safetensors",), "models/quantized"),
    Stage("reconstruct", "psaq.stages.reconstruct", ("reconstruct", "adaptive", "synthesis", "runtime"), ("model", "samples", "calibrate"), POINT,
          (f"pipeline/reconstructed/{POINT_STEM}.safetensors",), "models/reconstructed"),
    Stage("evaluate", "psaq.stages.evaluate", ("eval", "runtime"), ("data", "model", "fp32", "reconstruct"), POINT,
          (f"pipeline/metrics/{POINT_STEM}.json",), "metrics/points", kind="metrics"),
    Stage("export", "psaq.stages.export", ("export",), ("model", "reconstruct"), POINT,
          (f"pipeline/exported/{POINT_STEM}.int.safetensors", f"pipeline/exported/{POINT_STEM}.onnx"), "models/exported"),
    Stage("report", "psaq.stages.report", ("grid",), ("data", "model", "samples", "evaluate"), (),
          tuple(f"reports/{{model}}/{name}" for name in ("benchmark.md", "summary.json", "samples.png", "similarity.png",
                                                         "accuracy.png", "differences.png")), "reports/runs"),
)}
