"""A loaded model's data: what it is evaluated on and where the `real` baseline draws images."""

from __future__ import annotations

from torch.utils.data import DataLoader

from psaq.content import content_hashes
from psaq.data import DataSource, FolderDataset, RealSource, drawn_indices, first_images, loader, open_data
from psaq.errors import DatasetError
from psaq.models import LoadedModel


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
