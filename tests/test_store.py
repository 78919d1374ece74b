"""The artifact store: publish once, verify before reuse, never adopt a changed file."""

import json
import os
import stat
import subprocess
import sys

import pytest

from psaq.errors import ArtifactError
from psaq.store import Artifact, Store, stable_hash


def write_text(text):
    return lambda tmp: tmp.write_text(text)


def test_publish_then_reuse(tmp_path):
    store = Store(tmp_path)
    path = store.path("metrics", "m", "abc", ".json")
    art, built = store.publish(path, write_text("1"))
    assert built and path.read_text() == "1"
    assert json.loads(store.sidecar(path).read_text())["sha256"] == art.sha256
    again, built = store.publish(path, write_text("2"))
    assert not built and again == art and path.read_text() == "1"
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by the group and others, as the umask allows


def test_a_changed_file_is_set_aside_and_rebuilt_never_adopted(tmp_path):
    store = Store(tmp_path)
    path = store.path("models", "m", "k", ".safetensors")
    art, _ = store.publish(path, write_text("good"))
    path.write_text("flipped")
    with pytest.raises(ArtifactError, match="changed on disk"):
        art.verify()
    assert store.lookup(path) is None  # the corrupt file is moved aside …
    assert list(tmp_path.joinpath("models").glob(".m-k.safetensors.corrupt-*"))
    rebuilt, built = store.publish(path, write_text("good"))
    assert built and rebuilt.sha256 == art.sha256  # … and rebuilt from its inputs


def test_a_file_without_its_recorded_hash_is_not_adopted(tmp_path):
    store = Store(tmp_path)
    path = store.path("data", "s", "k", ".parquet")
    path.parent.mkdir(parents=True)
    path.write_text("from somewhere else")
    _, built = store.publish(path, write_text("mine"))
    assert built and path.read_text() == "mine"


def test_a_failed_write_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    path = store.path("data", "s", "k", ".parquet")

    def boom(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        store.publish(path, boom)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    store = Store(tmp_path)
    folder = tmp_path / "data" / "samples"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = folder / f".x.{dead.stdout.strip()}-123.partial.parquet"
    live = folder / f".y.{os.getpid()}-456.partial.parquet"
    stale.write_text("")
    live.write_text("")
    assert store.clean_stale() == [stale]
    assert live.exists() and not stale.exists()


def test_published_folders_are_verified_file_by_file(tmp_path):
    store = Store(tmp_path)

    def write(folder):
        (folder / "a.md").write_text("report")
        (folder / "b.png").write_bytes(b"png")

    art, built = store.publish_dir(tmp_path / "reports" / "r-1", write)
    assert built and store.publish_dir(tmp_path / "reports" / "r-1", write) == (art, False)
    (tmp_path / "reports" / "r-1" / "b.png").write_bytes(b"other")
    assert store.lookup_dir(tmp_path / "reports" / "r-1") is None


def test_views_point_at_the_latest_artifact(tmp_path):
    store = Store(tmp_path)
    a, _ = store.publish(store.path("metrics", "m", "1", ".json"), write_text("a"))
    b, _ = store.publish(store.path("metrics", "m", "2", ".json"), write_text("b"))
    view = tmp_path / "pipeline" / "m.json"
    store.link_view(a, view)
    store.link_view(b, view)
    assert view.read_text() == "b" and Artifact(a.path, a.sha256).verify()


def test_keys_hash_artifacts_by_content_not_path():
    assert stable_hash(Artifact("/x", "h")) == stable_hash(Artifact("/y", "h")) != stable_hash(Artifact("/x", "g"))
    with pytest.raises(TypeError, match="cannot hash"):
        stable_hash(object())


def test_a_read_only_store_hands_back_what_it_holds_and_builds_nothing(tmp_path):
    from psaq.store import NotInStore

    store = Store(tmp_path)
    path = store.path("metrics", "m", "abc", ".json")
    art, _ = store.publish(path, write_text("1"))
    folder, _ = store.publish_dir(tmp_path / "reports" / "r", lambda d: (d / "a.md").write_text("x"))
    reader = Store(tmp_path, read_only=True)
    assert reader.publish(path, write_text("2")) == (art, False)
    assert reader.publish_dir(tmp_path / "reports" / "r", lambda d: None) == (folder, False)
    with pytest.raises(NotInStore):
        reader.publish(store.path("metrics", "m", "other", ".json"), write_text("3"))
    with pytest.raises(NotInStore):
        reader.publish_dir(tmp_path / "reports" / "missing", lambda d: None)
    assert not store.path("metrics", "m", "other", ".json").exists()
    path.write_text("flipped")  # a changed file: not handed back, and left where it is for the run that rebuilds it
    with pytest.raises(NotInStore):
        reader.publish(path, write_text("2"))
    assert path.read_text() == "flipped" and not list(path.parent.glob("*.corrupt-*"))


def test_a_lookup_between_a_writers_two_links_sets_nothing_aside(tmp_path, monkeypatch):
    """The sidecar is linked before the file: a lookup in between finds no file (and builds), never
    a file without its hash, which it would set aside as corrupt."""
    store = Store(tmp_path)
    path = store.path("metrics", "m", "k", ".json")
    seen = []
    real_link = os.link

    def link_then_look(src, dst, *args, **kwargs):
        real_link(src, dst, *args, **kwargs)
        if str(dst).endswith(".sha256"):
            seen.append(Store(tmp_path).lookup(path))  # another process's lookup, between the links

    monkeypatch.setattr(os, "link", link_then_look)
    art, built = store.publish(path, write_text("good"))
    assert built and seen == [None] and path.read_text() == "good"
    assert not list(path.parent.glob("*.corrupt-*")) and store.lookup(path) == art


def test_a_sidecar_left_by_a_dead_writer_does_not_block_the_key(tmp_path, monkeypatch):
    import psaq.store as store_module

    monkeypatch.setattr(store_module, "WAIT_FOR_WRITER_S", 0.2)
    store = Store(tmp_path)
    path = store.path("metrics", "m", "k", ".json")
    path.parent.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store.sidecar(path).write_text(json.dumps({"sha256": "0" * 64, "pid": int(dead.stdout)}))  # its file never came
    art, built = store.publish(path, write_text("mine"))  # a dead writer's: taken at once
    assert built and path.read_text() == "mine" and store.lookup(path) == art
    path.unlink()
    store.sidecar(path).write_text(json.dumps({"sha256": "0" * 64, "pid": os.getpid()}))  # a live writer's
    import time

    started = time.monotonic()
    store.publish(path, write_text("mine"))
    assert time.monotonic() - started >= 0.2 and path.read_text() == "mine"  # waited for it, then took the key
