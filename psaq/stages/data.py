"""Stage ``data``: fingerprints of the evaluation images and of the images `real` calibrates on.

They change when a file is added, removed, or its content (evaluation images) or file record
(calibration images) changes, so every artifact computed from the images is keyed by them.
The checks against the model (class folders, size, normalization) happen where the images are
read, in the stages that read them.
"""

from __future__ import annotations

from psaq.data import is_builtin
from psaq.datasets import builtin_fingerprint
from psaq.errors import DatasetError
from psaq.folders import folder_fingerprint, links_out, resolve_roots
from psaq.models import MODELS, ModelConfig
from psaq.stages.stage import Stage


STAGE = Stage("data", __name__, ("model", "runtime"), (), (), ("pipeline/data.json",), "pipeline", "data_fp")


def default_dataset(model: ModelConfig) -> str | None:
    return MODELS.get(model.name).dataset if model.name in MODELS else None


def describe(model: ModelConfig, dataset: str | None, calib_dataset: str | None) -> tuple[str, str]:
    """Where a run evaluates, and where `real` draws images, in words (before anything is read)."""
    name = dataset or default_dataset(model)
    if name is None:
        return "nothing: set --dataset", "nothing"
    if is_builtin(name, calib_dataset, given=dataset is not None):
        return f"{name} test split (built in)", f"{name} train split (built in)"
    roots = resolve_roots(name, calib_dataset)
    skipped = links_out(roots.eval_dir)
    where = str(roots.eval_dir) + (f" ({len(skipped)} link(s) out of their class folder skipped, e.g. {skipped[0]})"
                                   if skipped else "")
    return where, str(roots.calib_dir) if roots.calib_dir else "nothing: pass --calib-dataset PATH"


def reads_outside(model: ModelConfig, dataset: str | None, calib_dataset: str | None) -> str | None:
    """The image folders outside the project, which DVC cannot see change (the stage fingerprints
    them itself, so DVC runs it on every repro); None for a built-in dataset, whose files are
    checked against pinned hashes where they are read."""
    name = dataset or default_dataset(model)
    if name is None or is_builtin(name, calib_dataset, given=dataset is not None):
        return None
    return f"the image folder {name}" + (f" and {calib_dataset}" if calib_dataset else "")


def run(model: ModelConfig, dataset: str | None, calib_dataset: str | None) -> dict:
    """{"eval": fingerprint, "calib": fingerprint or None}."""
    name = dataset or default_dataset(model)
    if name is None:
        raise DatasetError(f"model '{model.name}' has no built-in dataset: set runtime.dataset (or --dataset) to a "
                           "folder of class folders or a root holding train/ and val/")
    if is_builtin(name, calib_dataset, given=dataset is not None):
        return {"eval": builtin_fingerprint(name, "test"), "calib": builtin_fingerprint(name, "train")}
    roots = resolve_roots(name, calib_dataset)
    return {"eval": folder_fingerprint(roots.eval_dir),
            "calib": folder_fingerprint(roots.calib_dir, content=False) if roots.calib_dir else None}

