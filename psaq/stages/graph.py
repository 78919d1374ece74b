"""The stage graph: every stage's own declaration (``STAGE`` in its module), in run order.

    data ─┐
    model ┴─► fp32 ──────────────────────────────┐
          └─► samples ─► calibrate ─► reconstruct ─► evaluate ─► report
                                             └─► export

``reconstruct`` runs PSAQ-ViT V2's teacher-student loop (``--calib psaq-v2``) and/or block
reconstruction (psaq's option); with neither it hands the calibrated model on unchanged.

Each stage is implemented by one module of this package. Its code is that module's import
closure inside psaq (``psaq.codehash``): it is part of the stage's cache key and its DVC
dependencies. This file is in no stage's closure: reordering or adding a stage here re-keys
nothing. ``params`` are the params.yaml sections the stage reads (grid coordinates such as the
method, seed or bit width come from ``matrix``; a section change that leaves the stage's inputs
as they were makes DVC run it, and the store then hands back the same artifact). ``views`` are
the fixed paths under which DVC tracks the stage's latest output; the artifact itself lives in
the store.
"""

from __future__ import annotations

from psaq.stages import calibrate, data, evaluate, export, fp32, model, reconstruct, report, samples
from psaq.stages.stage import POINT, POINT_STEM, Stage

# the model first: a model that cannot be loaded is the first thing a run reports. Export before
# evaluate: runners submit stage by stage, and a point's record (and its MLflow run) waits for its
# export, so exports queued behind every evaluation would hold all the logging to the end
MODULES = (model, data, fp32, samples, calibrate, reconstruct, export, evaluate, report)
GRAPH: dict[str, Stage] = {m.STAGE.name: m.STAGE for m in MODULES}
# each stage's code hash taken now, as its modules are imported: the hash names the code this
# process runs, even if a file is edited while a long run goes on (a hash read at the end would
# key the old code's results under the new code)
for _stage in GRAPH.values():
    _stage.code  # fills code_hash's cache
RUN = {m.STAGE.name: m.run for m in MODULES}  # stage name → (store?, **inputs) → output (data) or (output, built)
# stage name → (**settings) → what it reads outside the project under these settings, in words, or None
READS_OUTSIDE = {m.STAGE.name: m.reads_outside for m in MODULES if hasattr(m, "reads_outside")}



def producer(role: str, consumer: str = "evaluate") -> str:
    """The stage whose output ``consumer`` receives as ``role`` (``quantized``: the model it
    scores, whichever stage made it last). Readers of a finished point ask this, never a name, so a
    stage added before ``consumer`` is what they read."""
    found = [up for up in GRAPH[consumer].needs if GRAPH[up].passes_as == role]
    if len(found) != 1:
        raise LookupError(f"stage '{consumer}' reads {len(found)} stages as '{role}' ({found}); it must read one")
    return found[0]


__all__ = ["GRAPH", "MODULES", "POINT", "POINT_STEM", "READS_OUTSIDE", "RUN", "Stage", "producer"]
