"""Content hashes remembered by file record: same-size replacements with their times restored,
swaps by rename, and a cache that cannot be written."""

import hashlib
import os

import pytest

from psaq import content
from psaq.content import content_hashes
from psaq.folders import folder_fingerprint


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state" / "hashes.sqlite"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_hashes_are_the_contents(tmp_path, state):
    a = tmp_path / "a.png"
    a.write_bytes(b"abc")
    assert content_hashes([a], state) == {str(a): sha(b"abc")}


def test_unchanged_files_are_not_read_again(tmp_path, state, monkeypatch):
    a = tmp_path / "a.png"
    a.write_bytes(b"abc")
    content_hashes([a], state)
    monkeypatch.setattr(content, "file_sha256", lambda path: pytest.fail(f"{path} was read again"))
    assert content_hashes([a], state)[str(a)] == sha(b"abc")


def test_same_size_replacement_with_its_times_restored_is_seen(tmp_path, state):
    a = tmp_path / "a.png"
    a.write_bytes(b"abc")
    st = os.stat(a)
    content_hashes([a], state)
    a.write_bytes(b"xyz")  # same size
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))  # as touch -r, rsync -t or an archive would
    assert os.stat(a).st_mtime_ns == st.st_mtime_ns and os.stat(a).st_size == st.st_size
    assert content_hashes([a], state)[str(a)] == sha(b"xyz")


def test_files_swapped_by_rename_change_the_folder_fingerprint(tmp_path, state, monkeypatch):
    monkeypatch.setattr(content, "cache_root", lambda: state.parent)
    for name, data in (("cat", b"meow"), ("dog", b"woof")):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "1.png").write_bytes(data)
    times = os.stat(tmp_path / "data" / "cat" / "1.png").st_mtime_ns
    for name in ("cat", "dog"):
        os.utime(tmp_path / "data" / name / "1.png", ns=(times, times))
    before = folder_fingerprint(tmp_path / "data")
    os.rename(tmp_path / "data" / "cat" / "1.png", tmp_path / "swap")
    os.rename(tmp_path / "data" / "dog" / "1.png", tmp_path / "data" / "cat" / "1.png")
    os.rename(tmp_path / "swap", tmp_path / "data" / "dog" / "1.png")
    assert folder_fingerprint(tmp_path / "data") != before


def test_a_cache_that_cannot_be_written_still_gives_the_right_hashes(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    a = tmp_path / "a.png"
    a.write_bytes(b"abc")
    assert content_hashes([a], blocker / "hashes.sqlite") == {str(a): sha(b"abc")}


def test_a_corrupt_cache_is_not_trusted(tmp_path, state):
    state.parent.mkdir(parents=True)
    state.write_bytes(b"this is not a database" * 100)
    a = tmp_path / "a.png"
    a.write_bytes(b"abc")
    assert content_hashes([a], state) == {str(a): sha(b"abc")}
