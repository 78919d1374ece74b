"""Checkpoints: safetensors, or a torch state dict read with ``weights_only=True``. Never pickle."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from psaq.errors import CheckpointError

SAFETENSORS_SUFFIXES = (".safetensors",)
# common wrappers of a saved state dict, in the order they are tried: a timm training checkpoint
# holds "state_dict" and, with EMA on, "state_dict_ema" beside it; psaq reads the trained weights
# where both are there (timm's own load_checkpoint takes the EMA copy by default), and the EMA
# copy where it is the only one
STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_mode()


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename over ``path``: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".partial.tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; artifacts are shared like any file the user writes
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_safetensors(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """``safetensors.torch.save_file`` through ``atomic_write``. Its writer reports a full disk or a
    file-size limit as a SafetensorError carrying the OS message; it is raised as the OSError it
    is, so every entry point answers it as it answers any other failed write (one line)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        try:
            save_file(state, str(tmp), metadata=metadata)
        except SafetensorError as exc:
            if "I/O error" not in str(exc):
                raise
            code = re.search(r"os error (\d+)", str(exc))
            number = int(code.group(1)) if code else errno.EIO
            raise OSError(number, os.strerror(number), str(path)) from exc

    return atomic_write(path, write)


def save_checkpoint(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save the state dict as safetensors (tensors made contiguous; shared storage copied)."""
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return write_safetensors(state, path, metadata or {})


def is_safetensors(path: str | Path) -> bool:
    """By content, whatever the file is named: an 8-byte little-endian header length, then the
    JSON header (a ``.pt`` that is really safetensors is common)."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return Path(path).suffix in SAFETENSORS_SUFFIXES
    if len(head) < 9:
        return False
    return 0 < int.from_bytes(head[:8], "little") <= size - 8 and head[8:9] == b"{"


# prefixes that wrappers put before every key (DistributedDataParallel, some training loops)
WRAPPER_PREFIXES = ("module.", "model.")


@dataclass(frozen=True)
class CheckpointContent:
    """A checkpoint as read once: its tensors, the sha256 of the very bytes they came from, and
    its safetensors metadata (empty for a torch file). One read, so the hash a run keys its results
    by is the hash of what it loaded, even if the file is replaced meanwhile."""

    state: dict[str, torch.Tensor]
    sha256: str
    metadata: dict[str, str]


def read_checkpoint(path: str | Path) -> CheckpointContent:
    """Read a checkpoint file once; refuse what is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint '{path}' cannot be read: {exc.strerror or exc}") from exc
    sha = hashlib.sha256(raw).hexdigest()
    metadata: dict[str, str] = {}
    try:
        if _safetensors_bytes(raw):
            from safetensors.torch import load as load_bytes

            header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
            metadata = header.get("__metadata__") or {}
            return CheckpointContent(load_bytes(raw), sha, metadata)
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure means a corrupt file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint '{path}' is corrupt or not a weights file: {reason[:200]}") from exc
    for key in STATE_DICT_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = sorted(k for k, v in obj.items() if isinstance(v, dict) and v
                        and all(isinstance(t, torch.Tensor) for t in v.values())) if isinstance(obj, dict) else []
        hint = (f"; it holds tensors under {', '.join(repr(k) for k in nested[:4])}: save that entry alone "
                f"(torch.save(ckpt[{nested[0]!r}], 'weights.pth'))" if nested else "")
        raise CheckpointError(f"checkpoint '{path}' holds no state dict of tensors{hint}")
    return CheckpointContent(obj, sha, metadata)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a state dict; refuse what is missing or unreadable."""
    return read_checkpoint(path).state


def _safetensors_bytes(raw: bytes) -> bool:
    return len(raw) >= 9 and 0 < int.from_bytes(raw[:8], "little") <= len(raw) - 8 and raw[8:9] == b"{"


def load_checkpoint(model: nn.Module, path: str | Path, content: CheckpointContent | None = None) -> nn.Module:
    """Load strictly: a checkpoint for another architecture is refused with its key names. A
    state dict whose every key carries a wrapper's prefix (``module.``, ``model.``) that the
    model's keys lack is read without it when the keys then match exactly. ``content``: the file
    as already read (``read_checkpoint``), not read again."""
    state = (content or read_checkpoint(path)).state
    own = model.state_dict()
    for prefix in WRAPPER_PREFIXES:
        if state and set(state) != set(own) and all(k.startswith(prefix) for k in state) \
                and {k[len(prefix):] for k in state} == set(own):
            state = {k[len(prefix):]: v for k, v in state.items()}
            break
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected)):
            if keys:
                parts.append(f"{label} ({len(keys)}): {', '.join(keys[:6])}{', …' if len(keys) > 6 else ''}")
        if mismatched:
            shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:4]]
            parts.append(f"shape mismatches ({len(mismatched)}): {', '.join(shapes)}")
        raise CheckpointError(
            f"checkpoint '{path}' does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)
    return model


CLASS_NAMES_KEY = "class_names"  # safetensors metadata: the model's classes in output order, as JSON


def checkpoint_class_names(path: str | Path, metadata: dict[str, str] | None = None) -> list[str] | None:
    """The class names a psaq-written safetensors checkpoint records, if any (``metadata``: its
    metadata as already read)."""
    if metadata is None:
        if not is_safetensors(path):
            return None
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    raw = metadata.get(CLASS_NAMES_KEY)
    if raw is None:
        return None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"checkpoint '{path}': its '{CLASS_NAMES_KEY}' metadata is not a list of names")
    return names
