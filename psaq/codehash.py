"""The code a stage runs: the transitive closure of a module's imports inside psaq, and its hash.

A stage's cache key and its DVC dependencies both come from here, so a change to any file a
stage imports reruns that stage under Prefect, under DVC and from the command line alike, and
a change elsewhere reruns nothing. Imports are read from the source (``ast``), including those
inside functions; importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``.
"""

from __future__ import annotations

import ast
import hashlib
import threading
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the folder holding the psaq package
PACKAGES = ("psaq",)


def module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _imports(path: Path, name: str) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    # every parent package's __init__ runs too
    return {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}


_PARSE_LOCK = threading.Lock()  # CPython's parser is not safe from several threads at once (stages run in threads)


@lru_cache(maxsize=None)
def closure(module: str) -> tuple[Path, ...]:
    """Every psaq source file that importing ``module`` can run, sorted."""
    with _PARSE_LOCK:
        return _closure(module)


def _closure(module: str) -> tuple[Path, ...]:
    seen: dict[str, Path] = {}
    stack = [module]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        path = module_file(name)
        if path is None:
            continue
        seen[name] = path
        stack.extend(_imports(path, name) - set(seen))
    return tuple(sorted(set(seen.values())))


def source_hash(path: str | Path) -> str:
    """sha256 of what a Python file computes: its syntax tree without docstrings, so comments,
    docstrings and layout change no key (an edit of a docstring re-keyed every export once); any
    other file by its bytes."""
    path = Path(path)
    if path.suffix != ".py":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    with _PARSE_LOCK:
        tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


@lru_cache(maxsize=None)
def code_hash(module: str) -> str:
    h = hashlib.sha256()
    for path in closure(module):
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        h.update(source_hash(path).encode())
    return h.hexdigest()[:16]
