"""The artifact store: every stage's output, content-addressed and verified before reuse.

An artifact lives at ``<root>/<kind>/<stem>-<key><suffix>``, where ``key`` hashes everything
that can change it (configs, upstream content hashes, data fingerprints, the stage's code).
Publishing writes a temporary file named after the writing process, records the content hash
in a sidecar (``<file>.sha256``), then links the file into place only if no other writer got
there first: nothing half-written is ever visible, and a new config never overwrites an old
artifact. Reuse re-hashes the file against its sidecar; a file that fails is moved aside and
rebuilt, never adopted. The command line, the Prefect flows and the DVC stages share one store.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psaq.content import file_sha256
from psaq.errors import ArtifactError
from psaq.processes import alive

SIDECAR = ".sha256"
MANIFEST = "manifest.sha256.json"  # a published folder's file hashes
PARTIAL = ".partial"
WAIT_FOR_WRITER_S = 30.0  # how long a writer waits for the file of another's sidecar before taking the key
_WRITER = re.compile(r"\.(\d+)(?:-\w+)?\.partial")  # the writing process's pid in a temporary name


@dataclass(frozen=True)
class Artifact:
    """A published file and the content hash it was published with."""

    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> Artifact:
        """A file as it is now (a user's file, a DVC view): its path and current content hash."""
        return cls(str(path), file_sha256(path))

    def verify(self) -> Path:
        """The path, after checking the file still has the content it was published with."""
        p = Path(self.path)
        if not p.is_file():
            raise ArtifactError(f"artifact '{p}' is missing; rerun to rebuild it")
        if file_sha256(p) != self.sha256:
            raise ArtifactError(f"artifact '{p}' changed on disk since it was made (content hash differs); "
                                "delete it and rerun to rebuild it")
        return p


def stable_hash(*parts: Any, length: int = 16) -> str:
    """Hash of JSON-able parts (configs, hashes, fingerprints); Artifacts hash by content."""
    def default(obj):
        if isinstance(obj, Artifact):
            return {"artifact": obj.sha256}
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"cannot hash {type(obj).__name__} into a cache key")

    text = json.dumps(parts, sort_keys=True, default=default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class NotInStore(Exception):
    """A read-only store was asked for an artifact it does not hold (the work is not done yet)."""


def _recorded(side: Path) -> str | None:
    try:
        return json.loads(side.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _writer_alive(side: Path) -> bool:
    try:
        pid = json.loads(side.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(pid, int) and alive(pid)


class Store:
    """A folder of content-addressed artifacts (``root``: the project folder). ``read_only``: hand
    back what it holds, verified, and raise ``NotInStore`` instead of building anything, so a
    caller can ask "is this whole run already done?" at the cost of hashing its artifacts."""

    def __init__(self, root: str | Path, read_only: bool = False):
        self.root = Path(root).resolve()
        self.read_only = read_only

    def path(self, kind: str, stem: str, key: str, suffix: str) -> Path:
        return self.root / kind / f"{stem}-{key}{suffix}"

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + SIDECAR)

    def lookup(self, path: str | Path) -> Artifact | None:
        """The verified artifact at ``path``, or None when it must be (re)built. A file whose
        content no longer matches its recorded hash is moved aside, not adopted."""
        path = Path(path)
        if not path.is_file():
            return None
        side = self.sidecar(path)
        recorded = _recorded(side)
        actual = file_sha256(path)
        if recorded == actual:
            return Artifact(str(path), actual)
        if self.read_only:  # the run that rebuilds it sets it aside
            return None
        self._set_aside(path)
        side.unlink(missing_ok=True)
        return None

    def published_with(self, folder: str, sha256: str) -> Path | None:
        """An artifact in ``folder`` that was published with this content hash and still holds it
        (a view edited in place edits the artifact it links to: then there is none)."""
        for side in sorted((self.root / folder).glob(f"*{SIDECAR}")):
            try:
                if json.loads(side.read_text())["sha256"] != sha256:
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue
            path = side.with_name(side.name[: -len(SIDECAR)])
            if path.is_file() and file_sha256(path) == sha256:
                return path
        return None

    def publish(self, path: str | Path, write: Callable[[Path], Any]) -> tuple[Artifact, bool]:
        """``(artifact, built)``: the verified artifact at ``path``, built by ``write(tmp)`` if it
        is missing or fails its hash. Two writers at once: the first one published wins."""
        path = Path(path)
        found = self.lookup(path)
        if found is not None:
            return found, False
        if self.read_only:
            raise NotInStore(str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}-{time.monotonic_ns() % 10**9}{PARTIAL}{path.suffix}")
        try:
            write(tmp)
            sha = file_sha256(tmp)
            side_tmp = tmp.with_name(tmp.name + SIDECAR)
            side_tmp.write_text(json.dumps({"sha256": sha, "created": time.time(), "pid": os.getpid()}) + "\n")
            try:
                self._link_with_sidecar(tmp, side_tmp, path, sha)
            finally:
                side_tmp.unlink(missing_ok=True)
        finally:
            tmp.unlink(missing_ok=True)
        found = self.lookup(path)
        if found is None:
            raise ArtifactError(f"artifact '{path}' could not be published (it failed its hash right after writing)")
        return found, True

    def _link_with_sidecar(self, tmp: Path, side_tmp: Path, path: Path, sha: str) -> None:
        """Put the sidecar in place, then the file: whoever finds the file finds its hash beside
        it (a lookup between the two would set a good file aside as corrupt). Both are links, which
        fail if the name exists: of two writers of one key, the first to link the sidecar publishes."""
        side = self.sidecar(path)
        try:
            os.link(side_tmp, side)
        except FileExistsError:
            if _recorded(side) != sha:
                # another writer publishes other bytes under this key: wait for its file; a sidecar whose
                # file never comes is a writer's that died between the two links
                deadline = time.monotonic() + WAIT_FOR_WRITER_S
                while not path.exists() and time.monotonic() < deadline and _writer_alive(side):
                    time.sleep(0.05)
                if path.exists():
                    return
                os.replace(side_tmp, side)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another writer of the same bytes linked first; checked by the caller's lookup

    def lookup_dir(self, path: str | Path) -> Artifact | None:
        """A published folder, verified file by file against its manifest (``MANIFEST``)."""
        path = Path(path)
        manifest = path / MANIFEST
        if not manifest.is_file():
            if path.exists() and not self.read_only:
                self._set_aside(path)
            return None
        try:
            recorded = json.loads(manifest.read_text())
        except (OSError, ValueError):
            recorded = None
        files = {p.relative_to(path).as_posix(): file_sha256(p) for p in sorted(path.rglob("*"))
                 if p.is_file() and p.name != MANIFEST}
        if recorded != files:
            if not self.read_only:
                self._set_aside(path)
            return None
        return Artifact(str(path), stable_hash(files, length=64))

    def publish_dir(self, path: str | Path, write: Callable[[Path], Any]) -> tuple[Artifact, bool]:
        """As ``publish``, for a folder of files (a report and its figures)."""
        path = Path(path)
        found = self.lookup_dir(path)
        if found is not None:
            return found, False
        if self.read_only:
            raise NotInStore(str(path))
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{time.monotonic_ns() % 10**9}{PARTIAL}")
        tmp.mkdir(parents=True)
        try:
            write(tmp)
            files = {p.relative_to(tmp).as_posix(): file_sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            (tmp / MANIFEST).write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")
            try:
                os.rename(tmp, path)
            except OSError:
                pass  # another writer published first
        finally:
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        found = self.lookup_dir(path)
        if found is None:
            raise ArtifactError(f"report folder '{path}' could not be published")
        return found, True

    @staticmethod
    def _set_aside(path: Path) -> None:
        os.replace(path, path.with_name(f".{path.name}.corrupt-{int(time.time())}"))

    def link_view(self, artifact: Artifact, view: str | Path) -> Path:
        """A stable name (``view``) for an artifact: a hard link replaced atomically, so DVC and
        people find the latest result at a fixed path while the store keeps every version."""
        view = Path(view)
        view.parent.mkdir(parents=True, exist_ok=True)
        tmp = view.with_name(f".{view.name}.{os.getpid()}{PARTIAL}")
        tmp.unlink(missing_ok=True)
        try:
            os.link(artifact.path, tmp)
        except OSError:  # another file system: copy instead
            import shutil

            shutil.copyfile(artifact.path, tmp)
        os.replace(tmp, view)
        return view

    def clean_stale(self) -> list[Path]:
        """Remove temporary files left by writers that no longer run (a ``kill -9``)."""
        removed = []
        if not self.root.is_dir():
            return removed
        for folder in ("models", "data", "metrics", "reports", "pipeline", "exports"):
            base = self.root / folder
            if not base.is_dir():
                continue
            for tmp in base.rglob(f".*{PARTIAL}*"):
                match = _WRITER.search(tmp.name)
                if match and alive(int(match.group(1))):
                    continue
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
        return removed
