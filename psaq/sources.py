"""A loaded model's data: what it is evaluated on and where the `real` baseline draws images."""

from __future__ import annotations

from torch.utils.data import DataLoader

from psaq.content import content_hashes
from psaq.data import (DataSource, FolderDataset, RealSource, drawn_indices, first_images, is_builtin, loader,
                       open_data)
from psaq.errors import DatasetError
from psaq.folders import folder_fingerprint, resolve_roots
from psaq.models import MODELS, LoadedModel, ModelConfig


def model_data(loaded: LoadedModel, dataset: str | None = None, calib_dataset: str | None = None) -> DataSource:
    """The model's evaluation data and `real` calibration source, checked against its input spec."""
    return open_data(loaded.spec, dataset, calib_dataset, default=loaded.dataset)


def eval_loader(data: DataSource, batch_size: int = 128) -> DataLoader:
    return loader(data.eval_set, batch_size)


def real_source(data: DataSource) -> RealSource | None:
    """Where the `real` baseline draws its images: the training split, never the evaluation images.
    From folders, the drawn images' contents are checked against every evaluation image's
    (copies too, which no path or inode comparison sees)."""
    if data.calib_set is None:
        return None

    def draw(n: int, seed: int):
        if isinstance(data.calib_set, FolderDataset) and isinstance(data.eval_set, FolderDataset):
            refuse_test_images([data.calib_set.folders.samples[i][0] for i in drawn_indices(data.calib_set, n, seed)],
                               [path for path, _ in data.eval_set.folders.samples])
        return first_images(data.calib_set, n, seed)

    return draw


def refuse_test_images(drawn: list[str], evaluation: list[str]) -> None:
    test = set(content_hashes(evaluation).values())
    copies = [path for path, digest in content_hashes(drawn).items() if digest in test]
    if copies:
        raise DatasetError(f"{len(copies)} of the {len(drawn)} calibration images drawn for `real` are evaluation images "
                           f"(same content), e.g. '{copies[0]}': calibrating on test images would inflate the real "
                           "baseline; pass a training folder without them")


def require_unchanged(model: ModelConfig, dataset: str | None, calib_dataset: str | None, keyed: dict,
                      parts: tuple[str, ...] = ("eval",), data: DataSource | None = None) -> None:
    """After a stage has read its images: what it read is what the key it publishes under was
    computed from (``keyed``: the data stage's fingerprints), or nothing is published. The
    evaluation folder's fingerprint is taken again from the bytes its images were decoded from
    (``data.eval_set.read_hashes``) and the files not read; the calibration folder's, a record of
    each file, from the files as they are now. A folder edited while a run read it would otherwise
    leave the result of the images read under the fingerprint of the images restored later. A
    built-in dataset's files are checked against pinned hashes where they are read."""
    name = dataset or (MODELS.get(model.name).dataset if model.name in MODELS else None)
    if name is None or is_builtin(name, calib_dataset, given=dataset is not None):
        return
    roots = resolve_roots(name, calib_dataset)
    read = getattr(data.eval_set, "read_hashes", None) if data is not None else None
    now = {"eval": lambda: folder_fingerprint(roots.eval_dir, read=read),
           "calib": lambda: folder_fingerprint(roots.calib_dir, content=False) if roots.calib_dir else None}
    changed = [part for part in parts if now[part]() != keyed.get(part)]
    if changed:
        folders = [str(roots.eval_dir if part == "eval" else roots.calib_dir) for part in changed]
        raise DatasetError(f"the images of {' and '.join(folders)} changed while this run read them (their "
                           "fingerprint before and after differ); nothing was kept: rerun once the folder is settled")
