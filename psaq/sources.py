"""A loaded model's data: what it is evaluated on and where the `real` baseline draws images."""

from __future__ import annotations

from torch.utils.data import DataLoader

from psaq.data import DataSource, RealSource, first_images, loader, open_data
from psaq.models import LoadedModel


def model_data(loaded: LoadedModel, dataset: str | None = None, calib_dataset: str | None = None) -> DataSource:
    """The model's evaluation data and `real` calibration source, checked against its input spec."""
    return open_data(loaded.spec, dataset, calib_dataset, default=loaded.dataset)


def eval_loader(data: DataSource, batch_size: int = 128) -> DataLoader:
    return loader(data.eval_set, batch_size)


def real_source(data: DataSource) -> RealSource | None:
    """Where the `real` baseline draws its images: the training split, never the evaluation images."""
    if data.calib_set is None:
        return None
    return lambda n, seed: first_images(data.calib_set, n, seed)
