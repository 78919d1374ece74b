"""What a data folder's fingerprint costs: 10,000 Fashion-MNIST test images written as PNG class
folders, fingerprinted by file record, by content with no remembered hashes, and by content
remembered from the run before.

    .venv/bin/python benchmarks/fingerprint_cost.py        # a few seconds (writing the PNGs: ~20 s, once)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    from PIL import Image

    from psaq.datasets.fashion_mnist import fashion_split

    root = Path(tempfile.gettempdir()) / "psaq-fingerprint-cost" / "fashion-test"
    if not root.exists():
        images, labels = fashion_split("test").tensors
        pixels = ((images[:, 0] * 0.3530 + 0.2860).clamp(0, 1) * 255).round().byte().numpy()
        for i, label in enumerate(labels.tolist()):
            (root / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels[i]).save(root / str(label) / f"{i:05d}.png")
    files = list(root.rglob("*.png"))
    size = sum(p.stat().st_size for p in files)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["PSAQ_DATA_CACHE"] = cache  # no remembered hashes to start with
        from psaq.folders import folder_fingerprint

        for label, content in (("file records", False), ("content, cold", True), ("content, remembered", True)):
            t = time.perf_counter()
            folder_fingerprint(root, content)
            print(f"{label:20s} {time.perf_counter() - t:5.2f} s for {len(files)} images ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
