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
# Plug-ins: one file per model family or built-in dataset. A stage's closure stops at them; each
# point's key adds the code of its own model's family and dataset (``psaq.stages.common.identity``),
# so an edit to the Swin family re-keys Swin points only, and a new family re-keys nothing.
PLUGIN_PACKAGES = ("psaq.families", "psaq.datasets")


def is_plugin(name: str) -> bool:
    return any(name.startswith(package + ".") for package in PLUGIN_PACKAGES)


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
    """Every psaq source file that importing ``module`` can run, sorted; plug-in files only when
    ``module`` is itself a plug-in."""
    with _PARSE_LOCK:
        return _closure(module)


def _closure(module: str) -> tuple[Path, ...]:
    seen: dict[str, Path] = {}
    stack = [module]
    cut = not is_plugin(module)
    while stack:
        name = stack.pop()
        if name in seen or (cut and is_plugin(name)):
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
    other file by its bytes. A Python file's tree is remembered by its bytes' hash: each stage's
    closure shares most files, and parsing them once per stage cost seconds at every start."""
    path = Path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if path.suffix != ".py":
        return digest
    if digest not in _TREES:
        _TREES[digest] = _tree_hash(data, str(path))
    return _TREES[digest]


_TREES: dict[str, str] = {}  # a Python file's bytes (sha256) → the hash of its tree without docstrings


def _tree_hash(data: bytes, name: str) -> str:
    with _PARSE_LOCK:
        tree = ast.parse(data.decode(), name)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def plugin_files() -> list[str]:
    """Every plug-in source file, relative to ROOT (what DVC compares besides the stages' own code)."""
    files = (p for package in PLUGIN_PACKAGES for p in ROOT.joinpath(*package.split(".")).glob("*.py")
             if p.name != "__init__.py")
    return sorted(p.relative_to(ROOT).as_posix() for p in files)


@lru_cache(maxsize=None)
def code_hash(module: str) -> str:
    h = hashlib.sha256()
    for path in closure(module):
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        h.update(source_hash(path).encode())
    return h.hexdigest()[:16]
