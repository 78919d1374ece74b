"""The results a run is compared with: the committed ones, else the previous run's.

``reports/<model>/accuracy.json`` and ``differences.json`` are tracked by git, so the last commit
holds the results that went with its code. A run reads git's copy (``git show HEAD:…``) before
it overwrites the working files; where the commit has none, or only of another grid, it falls
back to the working files the previous run left.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tasks.settings import project_root

FILES = ("accuracy.json", "differences.json")
Rows = tuple[list[dict], list[dict]]


def _git_show(path: Path) -> str | None:
    root = project_root()
    try:
        rel = path.resolve().relative_to(root)
        out = subprocess.run(["git", "show", f"HEAD:{rel.as_posix()}"], cwd=root, capture_output=True, text=True,
                             timeout=30)
    except (ValueError, OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def committed(folder: Path) -> Rows | None:
    """The last commit's accuracy and difference rows of ``folder``, or None."""
    texts = [_git_show(folder / name) for name in FILES]
    if any(t is None for t in texts):
        return None
    try:
        return tuple(json.loads(t) for t in texts)  # type: ignore[return-value]
    except json.JSONDecodeError:
        return None


def working(folder: Path) -> Rows | None:
    """The rows the previous run left in ``folder``, or None."""
    try:
        return tuple(json.loads((folder / name).read_text()) for name in FILES)  # type: ignore[return-value]
    except (OSError, json.JSONDecodeError):
        return None


def baselines(folder: Path) -> list[tuple[str, Rows]]:
    """What to compare with, in order of preference, read now (before this run replaces them)."""
    out = []
    for label, rows in (("the last commit", committed(folder)), ("the previous run", working(folder))):
        if rows is not None:
            out.append((label, rows))
    return out
