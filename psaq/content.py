"""Content hashes of files, and of data files remembered between runs.

A data folder's fingerprint is built from what its images hold, not from their sizes and
times: an image replaced by another of the same size with its time kept (``touch -r``,
``rsync -t``, an archive restored) or two images swapped by ``mv`` must change every result
computed from the folder. Hashing tens of thousands of images at every run would cost seconds,
so each file's hash is remembered with the file system's record of it (device, inode, size,
modification time and change time). The change time cannot be set from user space: writing a
file, changing its times, renaming or replacing it all move it, and a file whose record
differs in any field is hashed again.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

STATE_FILE = "content-hashes.sqlite"


def cache_root() -> Path:
    """psaq's per-user cache: unpacked datasets and the remembered content hashes."""
    return Path(os.environ.get("PSAQ_DATA_CACHE", Path.home() / ".cache" / "psaq"))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _record(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _hash_stable(path: str) -> tuple[tuple, str]:
    """(the record the hash belongs to, the hash): a file written while it was read is read again."""
    for _ in range(3):
        before = _record(os.stat(path))
        digest = file_sha256(path)
        if _record(os.stat(path)) == before:
            return before, digest
    raise OSError(f"'{path}' keeps changing while it is read")


def _open_state(state: Path | None) -> sqlite3.Connection | None:
    """The remembered hashes, or None where the cache cannot be written (then every file is read)."""
    path = state or cache_root() / STATE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=60)
        db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, dev INTEGER, ino INTEGER, "
                   "size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, sha256 TEXT)")
        return db
    except (OSError, sqlite3.Error):
        return None


def content_hashes(paths: Iterable[str | Path], state: Path | None = None) -> dict[str, str]:
    """sha256 of each file's content by absolute path, read only where the file's record changed
    since it was last hashed."""
    paths = [os.path.abspath(p) for p in paths]
    db = _open_state(state)
    known: dict[str, tuple] = {}
    if db is not None:
        try:
            # only the rows under the files' common folder ('0' is the character after '/')
            common = os.path.commonpath(paths) if paths else "/"
            rows = db.execute("SELECT path, dev, ino, size, mtime_ns, ctime_ns, sha256 FROM files "
                              "WHERE path >= ? AND path < ?", (common, common.rstrip("/") + "0")).fetchall()
            wanted = set(paths)
            known = {r[0]: (tuple(r[1:6]), r[6]) for r in rows if r[0] in wanted}
        except sqlite3.Error:
            db = None
    out, fresh = {}, []
    for path in paths:
        remembered = known.get(path)
        if remembered is not None and remembered[0] == _record(os.stat(path)):
            out[path] = remembered[1]
            continue
        record, digest = _hash_stable(path)
        out[path] = digest
        fresh.append((path, *record, digest))
    if db is not None:
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", fresh)
        except sqlite3.Error:
            pass  # a read-only or busy cache costs time at the next run, never a wrong hash
        finally:
            db.close()
    return out
