import pytest
import torch

from psaq.errors import SampleSetError
from psaq.io import SampleSet, read_samples, write_samples


def make_set():
    g = torch.Generator().manual_seed(0)
    return SampleSet(torch.randn(4, 3, 8, 8, generator=g), torch.tensor([1, 2, -1, 0]),
                     {"model": "digits-vit", "seed": 0, "final_loss": 1.5})


def test_round_trip_keeps_values_and_metadata(tmp_path):
    path = write_samples(tmp_path / "s.parquet", make_set())
    back = read_samples(path, expect={"model": "digits-vit", "shape": [4, 3, 8, 8]})
    assert torch.equal(back.images, make_set().images) and back.labels.tolist() == [1, 2, -1, 0]
    assert back.metadata["seed"] == 0 and back.metadata["final_loss"] == 1.5
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_corrupt_and_foreign_sets_are_refused(tmp_path):
    path = write_samples(tmp_path / "s.parquet", make_set())
    data = path.read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleSetError, match="truncated or corrupt"):
        read_samples(tmp_path / "cut.parquet")
    with pytest.raises(SampleSetError, match="made for model='digits-vit'"):
        read_samples(path, expect={"model": "deit_tiny_patch16_224"})
    with pytest.raises(SampleSetError, match="does not exist"):
        read_samples(tmp_path / "none.parquet")
