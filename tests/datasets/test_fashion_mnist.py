"""Fashion-MNIST from Debian's package: read with torchvision, refused in one line when broken."""

import gzip

import pytest

from psaq.errors import DatasetError
from psaq.datasets.fashion_mnist import RAW_SHA256, SOURCE, unpacked

HAVE_PACKAGE = all((SOURCE / f"{name}.gz").is_file() for name in RAW_SHA256)


def test_a_missing_file_names_the_package_to_install(tmp_path):
    with pytest.raises(DatasetError, match="is missing: install Debian's dataset-fashion-mnist"):
        unpacked(tmp_path / "nowhere", tmp_path / "cache")


def test_a_truncated_or_changed_file_is_refused(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in RAW_SHA256:
        with gzip.open(source / f"{name}.gz", "wb") as f:
            f.write(b"\x00\x00\x08\x03" + b"\x00" * 100)  # an idx header, wrong content
    with pytest.raises(DatasetError, match="does not hold the data psaq was measured on"):
        unpacked(source, tmp_path / "cache")
    first = next(iter(RAW_SHA256))  # the first file read
    (source / f"{first}.gz").write_bytes(gzip.compress(b"x" * 1000)[:20])  # cut short
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        unpacked(source, tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.partial"))


@pytest.mark.skipif(not HAVE_PACKAGE, reason="dataset-fashion-mnist is not installed (make setup installs it)")
def test_the_debian_files_read_as_fashion_mnist(tmp_path, monkeypatch):
    from psaq.datasets import fashion_mnist as fashion  # the Debian package reader

    monkeypatch.setenv("PSAQ_DATA_CACHE", str(tmp_path))
    fashion.fashion_split.cache_clear()
    test = fashion.fashion_split("test")
    x, y = test.tensors
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert sorted(y.bincount().tolist()) == [1000] * 10  # 1,000 test images per class
    assert abs(float(x.mean())) < 0.05  # normalized with the training set's statistics
    # a second read finds the verified unpacked files
    assert (tmp_path / "fashion-mnist" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()
    fashion.fashion_split.cache_clear()
