"""Image folders as users pass them: an ImageNet-style root or a folder of class folders.

Everything that decides which label an image gets is checked here, because a wrong label
gives a plausible wrong top-1: class folders against the model's outputs (count, and names
when the model or its checkpoint carries them), numeric names ordered as numbers, hidden
entries skipped, symlinked folders followed once (a loop is not followed again).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from psaq.content import content_hashes
from psaq.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
EVAL_SPLIT, CALIB_SPLIT = "val", "train"  # the official --dataset root holds train/ and val/
SYNSET = re.compile(r"^n\d{8}$")


def _visible_dirs(path: Path) -> list[os.DirEntry]:
    try:
        return [e for e in os.scandir(path) if not e.name.startswith(".") and e.is_dir()]
    except OSError as exc:
        raise DatasetError(f"cannot read '{path}': {exc.strerror or exc}") from exc


def class_order(names: list[str]) -> list[str]:
    """Numeric names (``1``…``10``) in numeric order, so ``10`` does not come before ``2``; any
    other names sorted as text (as torchvision's ImageFolder sorts them)."""
    if all(re.fullmatch(r"[+-]?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


def class_folder_names(root: Path) -> list[str]:
    """The class folders of ``root`` in the order they map to outputs when the model names none."""
    return class_order([e.name for e in _visible_dirs(root)])


def _images_under(folder: Path, skipped: list[str] | None = None) -> list[Path]:
    """Image files below ``folder``, each real file once. Links are followed only where they stay
    inside ``folder`` (its real path): a link out of a class folder (to another class, an ancestor,
    elsewhere on the disk) would label foreign images with this class, so it is skipped and noted
    in ``skipped``; a loop, or a folder linked twice, is walked once."""
    top = folder.resolve()
    seen: set[tuple[int, int]] = set()
    found: list[Path] = []
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            st = current.stat()
        except OSError as exc:
            raise DatasetError(f"cannot read '{current}': {exc.strerror or exc}") from exc
        if (st.st_dev, st.st_ino) in seen:
            continue  # a symlink loop, or a folder linked twice
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            raise DatasetError(f"cannot read '{current}': {exc.strerror or exc}") from exc
        for entry in entries:
            if entry.name.startswith("."):
                continue
            is_dir = entry.is_dir()
            if not (is_dir or entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)):
                continue
            if entry.is_symlink():
                target = Path(entry.path).resolve()
                if target != top and top not in target.parents:
                    if skipped is not None:
                        skipped.append(entry.path)
                    continue
            if is_dir:
                stack.append(Path(entry.path))
                continue
            st = os.stat(entry.path)
            if (st.st_dev, st.st_ino) not in seen:  # a file and a link to it: one image
                seen.add((st.st_dev, st.st_ino))
                found.append(Path(entry.path))
    return sorted(found)


def links_out(root: str | Path) -> list[str]:
    """The links in ``root``'s class folders that lead out of their class folder: not read."""
    skipped: list[str] = []
    for entry in _visible_dirs(Path(root)):
        _images_under(Path(entry.path), skipped)
    return skipped


@dataclass(frozen=True)
class ClassFolders:
    """A scanned folder of class folders: every image with its class index in the model's order."""

    root: Path
    classes: tuple[str, ...]  # folder names, in label order
    samples: tuple[tuple[str, int], ...]  # (path, label)
    skipped: tuple[str, ...] = ()  # links that lead out of their class folder, not read


def scan_class_folders(root: str | Path, num_classes: int, class_names: tuple[str, ...] | None = None) -> ClassFolders:
    """Scan ``root/<class>/<image>`` and check it against a model with ``num_classes`` outputs
    (0: a headless backbone, whose labels serve the k-NN evaluation only).

    With ``class_names`` (the model's, in output order) folders are matched by name, so a
    folder order that differs from the model's still gets the right labels."""
    path = Path(root)
    if not path.exists():
        raise DatasetError(f"dataset path '{path}' does not exist")
    if not path.is_dir():
        raise DatasetError(f"dataset path '{path}' is a file; expected a folder of class folders ({path}/<class>/<image>)")
    names = [e.name for e in _visible_dirs(path)]
    if not names:
        raise DatasetError(f"dataset path '{path}' has no class folders (expected {path}/<class>/<image>)")
    if num_classes and len(names) != num_classes:  # 0: a headless backbone, any class count
        hint = ""
        if set(names) == {EVAL_SPLIT, CALIB_SPLIT} or set(names) <= {EVAL_SPLIT, CALIB_SPLIT, "test"}:
            hint = f"; it looks like a dataset root: pass the root that holds {CALIB_SPLIT}/ and {EVAL_SPLIT}/"
        raise DatasetError(f"dataset '{path}' has {len(names)} class folders but the model has {num_classes} outputs{hint}")
    class_names = names_to_check(names, num_classes, class_names)
    if class_names is not None:
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise DatasetError(f"dataset '{path}': class folder(s) {', '.join(unknown[:5])} are not among the model's "
                               f"classes ({', '.join(class_names[:5])}{', …' if len(class_names) > 5 else ''})")
        order = list(class_names)
    else:
        order = class_order(names)
    samples, skipped = [], []
    owner: dict[tuple[int, int], tuple[str, str]] = {}
    for label, name in enumerate(order):
        images = _images_under(path / name, skipped)
        if not images:
            raise DatasetError(f"dataset '{path}': class folder '{name}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        for p in images:
            file_id = _file_id(p)
            if file_id in owner and owner[file_id][0] != name:  # one file under two labels: which is it?
                raise DatasetError(f"dataset '{path}': '{p}' (class '{name}') is the same file as '{owner[file_id][1]}' "
                                   f"(class '{owner[file_id][0]}'), by a link or a hard link; an image has one label")
            owner[file_id] = (name, str(p))
        samples.extend((str(p), label) for p in images)
    return ClassFolders(path, tuple(order), tuple(samples), tuple(skipped))


def _file_id(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)  # follows links: a linked image is its target
    return st.st_dev, st.st_ino


def shared_files(calib: ClassFolders, evaluation: ClassFolders) -> list[tuple[str, str]]:
    """(calibration image, evaluation image) pairs that are one file: hard or symbolic links,
    class folders linked across, or the same folder mounted twice."""
    ids = {_file_id(path): path for path, _ in evaluation.samples}
    return [(path, ids[key]) for path, _ in calib.samples if (key := _file_id(path)) in ids]


def folder_fingerprint(root: str | Path, content: bool = True, read: dict[str, str] | None = None) -> str:
    """Every image below ``root`` by relative path, with the class folder it sits in, and either
    its content (``psaq.content``: an evaluation folder, read whole at every evaluation anyway)
    or its file record (device, inode, size, modification and change time: a calibration
    folder, of which ``real`` reads a few images; writing, replacing, renaming or re-timing a
    file changes the record, so it is never stale, only sometimes rebuilt when nothing changed).
    ``read``: the content hashes of the bytes a run decoded, by absolute path, which stand for
    those files: the fingerprint of what was read, to compare with the one a result is keyed by."""
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(f"dataset path '{path}' does not exist or is not a folder")
    images = [(entry.name, Path(entry.path), image) for entry in sorted(_visible_dirs(path), key=lambda e: e.name)
              for image in _images_under(Path(entry.path))]
    read = read or {}
    if content:
        unread = [image for _, _, image in images if os.path.abspath(image) not in read]
        hashes = {**content_hashes(unread), **read}
        marks = [hashes[os.path.abspath(image)] for _, _, image in images]
    else:
        marks = [":".join(map(str, _record(image))) for _, _, image in images]
    h = hashlib.sha256()
    for (name, folder, image), mark in zip(images, marks):
        h.update(f"{name}/{image.relative_to(folder)}\0{mark}\n".encode())
    return f"folder:{h.hexdigest()[:16]}"


def _record(path: Path) -> tuple[int, ...]:
    st = os.stat(path)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@dataclass(frozen=True)
class DataRoots:
    """Where evaluation images and ``real`` calibration images come from (None: not given)."""

    eval_dir: Path
    calib_dir: Path | None


def resolve_roots(dataset: str | Path, calib_dataset: str | Path | None = None) -> DataRoots:
    """``ROOT`` holding ``val/`` (and ``train/``): evaluate on ``val/``, calibrate ``real`` on
    ``train/``, as the official ``--dataset`` does. Any other folder is the evaluation set, and
    the ``real`` mode then needs ``calib_dataset``; test images never calibrate."""
    # "~" expands here as it does for checkpoints: a quoted path in params.yaml reaches us unexpanded
    root = Path(dataset).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset path '{root}' does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset path '{root}' is a file; expected a folder of class folders or a root with {EVAL_SPLIT}/")
    subdirs = {e.name for e in _visible_dirs(root)}
    calib = Path(calib_dataset).expanduser() if calib_dataset else None
    if EVAL_SPLIT in subdirs:
        return DataRoots(root / EVAL_SPLIT, calib or (root / CALIB_SPLIT if CALIB_SPLIT in subdirs else None))
    if subdirs == {CALIB_SPLIT}:
        raise DatasetError(f"dataset root '{root}' has {CALIB_SPLIT}/ but no {EVAL_SPLIT}/ to evaluate on")
    return DataRoots(root, calib)


def imagenet_synsets() -> tuple[str, ...]:
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo().label_names())


def names_to_check(folder_names: list[str], num_classes: int, class_names: tuple[str, ...] | None):
    """The model's class names to check folders against: its own, or ImageNet-1k's synsets for
    a 1000-class model whose folders are named by synset."""
    if class_names is not None:
        return class_names
    if num_classes == 1000 and folder_names and all(SYNSET.match(n) for n in folder_names):
        return imagenet_synsets()
    return None
