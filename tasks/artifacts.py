"""Artifacts passed between stages (paths and content hashes, never live tensors) and the cache policy."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from psaq.models.checkpoint import file_sha256
from tasks.settings import project_root


@dataclass(frozen=True)
class Artifact:
    path: str
    sha256: str

    @classmethod
    def of(cls, path: str | Path) -> Artifact:
        return cls(str(path), file_sha256(path))

    def verify(self) -> Path:
        """The path, after checking the file is still the one the cache recorded."""
        from psaq.errors import SampleSetError

        p = Path(self.path)
        if not p.is_file():
            raise SampleSetError(f"artifact '{p}' is missing; rerun with PREFECT_TASKS_REFRESH_CACHE=true or `make clean`")
        if file_sha256(p) != self.sha256:
            raise SampleSetError(f"artifact '{p}' changed on disk since it was made (content hash differs)")
        return p


def config_hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def content_path(folder: str, stem: str, suffix: str, *inputs: Any) -> str:
    """``<project>/<folder>/<stem>-<hash of inputs and code><suffix>``: one path per (inputs, code),
    so a new config or new code never overwrites an older artifact."""
    from tasks.settings import code_version

    path = project_root() / folder / f"{stem}-{config_hash(code_version(), *inputs)}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(path)


def refreshing_if_missing(task, out: str):
    """The task itself, or a copy that refreshes its cache when its output file is gone, so a
    deleted artifact is rebuilt rather than served from a cache entry that points at nothing."""
    return task if Path(out).is_file() else task.with_options(refresh_cache=True)


def stage_cache_policy() -> CachePolicy:
    """Inputs (configs, upstream hashes, the library's code version) + the task's source.

    No cross-process locks: Prefect's file locks have no expiry, so a run killed with -9
    would leave the next one waiting forever. Two concurrent runs may compute a stage twice;
    ``publish`` makes the first finished copy the one both use."""
    return INPUTS + TASK_SOURCE


def publish(out: str | Path, write: Callable[[Path], Any]) -> Artifact:
    """Write an artifact once: ``write(tmp)`` makes it beside ``out``, then a hard link publishes
    it only if ``out`` does not exist yet. An existing ``out`` (same inputs, same code: its name
    says so) is used as it is, so a concurrent run never swaps a file under a reader."""
    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_file():
        return Artifact.of(final)
    tmp = final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.partial{final.suffix}")
    try:
        write(tmp)
        try:
            os.link(tmp, final)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return Artifact.of(final)


def _register_artifact_hashing() -> None:
    from prefect.cache_policies import STABLE_TRANSFORMS

    # hash an Artifact by what it names, not by how cloudpickle happens to lay it out
    STABLE_TRANSFORMS[Artifact] = lambda a: ("Artifact", a.path, a.sha256)


_register_artifact_hashing()
