"""Values computed by the official PSAQ-ViT code (zkkli/PSAQ-ViT, d2c726f), kept beside the
repository in ``shared/reference/`` (or ``$PSAQ_SHARED/reference/``).

A parity test that cannot find them fails, never skips: a missing reference must not pass as
parity.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("PSAQ_SHARED", REPO.parent / "shared")) / "reference"


def load_reference(name: str):
    """(an open safetensors file, the ``cases`` of its metadata) of ``<name>.safetensors``."""
    from safetensors import safe_open

    path = REFERENCE_DIR / f"{name}.safetensors"
    assert path.is_file(), f"the official reference values are missing: {path} (set PSAQ_SHARED)"
    f = safe_open(str(path), "pt")
    return f, json.loads(f.metadata()["cases"])
