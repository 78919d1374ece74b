"""Artifacts on disk: sample sets as Parquet with a fixed-shape tensor column, metrics as JSON.

Every file is written atomically (temporary file, then rename) and carries a content hash
that is checked on read, so a truncated or foreign file is never taken for a good one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from psaq.errors import SampleSetError
from psaq.models.checkpoint import atomic_write

META_KEY = b"psaq"
FORMAT_VERSION = 1


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(t.detach().cpu().numpy()).tobytes()).hexdigest()


@dataclass
class SampleSet:
    images: torch.Tensor  # (N, C, H, W) float32, normalized input space
    labels: torch.Tensor  # (N,) int64; -1 where there is none
    metadata: dict  # model, checkpoint hash, seed, config, steps, final loss terms, wall time, …


def write_samples(path: str | Path, samples: SampleSet) -> Path:
    images = samples.images.detach().cpu().float().contiguous()
    meta = {**samples.metadata, "format_version": FORMAT_VERSION, "shape": list(images.shape),
            "content_sha256": tensor_sha256(images)}
    column = pa.FixedShapeTensorArray.from_numpy_ndarray(images.numpy())
    table = pa.table({"image": column, "label": pa.array(samples.labels.cpu().numpy().astype(np.int64))})
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, use_dictionary=False, compression="zstd"))


def read_samples(path: str | Path, expect: dict | None = None) -> SampleSet:
    """Read and verify a sample set. ``expect`` maps metadata keys to required values
    (e.g. the model name and input shape), so a set made for another model is refused."""
    path = Path(path)
    if not path.is_file():
        raise SampleSetError(f"sample set '{path}' does not exist")
    try:
        table = pq.read_table(path)
        meta = json.loads(table.schema.metadata[META_KEY])
        images = torch.from_numpy(table.column("image").combine_chunks().to_numpy_ndarray().copy())
        labels = torch.from_numpy(table.column("label").to_numpy().copy())
    except Exception as exc:  # any parse failure means a damaged file
        raise SampleSetError(f"sample set '{path}' is truncated or corrupt ({type(exc).__name__}); delete it and rerun") from exc
    if list(images.shape) != meta.get("shape") or tensor_sha256(images) != meta.get("content_sha256"):
        raise SampleSetError(f"sample set '{path}' fails its content hash; delete it and rerun")
    for key, want in (expect or {}).items():
        if meta.get(key) != want:
            raise SampleSetError(f"sample set '{path}' was made for {key}={meta.get(key)!r}, not {want!r}")
    return SampleSet(images, labels, meta)


def write_json(path: str | Path, data: dict) -> Path:
    text = json.dumps(data, indent=1, sort_keys=True, default=float)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def read_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SampleSetError(f"'{path}' is missing or not valid JSON: {exc}") from exc
