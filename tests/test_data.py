import pytest
import torch

from psaq.data import DIGITS_SPEC, check_image_folder, digits_split, first_images
from psaq.errors import DatasetError


def test_digits_split_is_deterministic_stratified_and_disjoint():
    train, test = digits_split("train"), digits_split("test")
    assert len(train) == 1437 and len(test) == 360
    assert train.tensors[0].shape[1:] == DIGITS_SPEC.input_size
    counts = torch.bincount(test.tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    assert torch.equal(digits_split("test").tensors[0], test.tensors[0])
    lo, hi = DIGITS_SPEC.pixel_bounds()
    assert train.tensors[0].min() >= lo.min() - 1e-6 and train.tensors[0].max() <= hi.max() + 1e-6


def test_first_images_by_seed():
    train = digits_split("train")
    a, _ = first_images(train, 4, seed=0)
    b, _ = first_images(train, 4, seed=0)
    assert torch.equal(a, b)
    with pytest.raises(DatasetError, match="holds 1437"):
        first_images(train, 5000, seed=0)


def test_image_folder_checks(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        check_image_folder(tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        check_image_folder(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        check_image_folder(empty)
    (empty / "cat").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        check_image_folder(empty)
