"""How to run an exported model outside psaq: a short program that needs only ONNX Runtime,
NumPy and Pillow, and reads everything else (preprocessing, class names) from the file's
metadata. ``psaq export`` prints it; a test runs it and compares its top-1 with psaq's."""

from __future__ import annotations

from pathlib import Path

from psaq.folders import IMAGE_EXTENSIONS

_PROGRAM = '''\
import json, pathlib, numpy as np, onnxruntime as ort
from PIL import Image
session = ort.InferenceSession({model!r})
meta = session.get_modelmeta().custom_metadata_map
pre, root = json.loads(meta["psaq.preprocessing"]), pathlib.Path({folder!r})  # root/<class>/<image>
names = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
classes = json.loads(meta.get("psaq.class_names", "null")) or sorted(names, key=lambda n: (int(n), "") if all(
    x.isdigit() for x in names) else (0, n))
def pixels(path):  # short side to pre["resize"], centre crop, scale, normalize, CHW
    img = Image.open(path).convert(pre["mode"]); (w, h), r = img.size, pre["resize"]
    img = img.resize((r, int(r * h / w)) if w <= h else (int(r * w / h), r), getattr(Image, pre["interpolation"].upper()))
    (ch, cw), (w, h) = pre["crop"], img.size; top, left = int(round((h - ch) / 2)), int(round((w - cw) / 2))
    x = np.asarray(img.crop((left, top, left + cw, top + ch)), np.float32).reshape(ch, cw, -1) * pre["scale"]
    return ((x - np.float32(pre["mean"])) / np.float32(pre["std"])).transpose(2, 0, 1).astype(np.float32)
files = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).rglob("*"))
         if p.suffix.lower() in {extensions!r} and not p.name.startswith(".")]
hits = sum(int(session.run(None, {{"images": pixels(p)[None]}})[0].argmax()) == i for p, i in files)
print(f"top-1 {{100 * hits / len(files):.2f}} % over {{len(files)}} images")
'''


def example_program(model: str | Path, folder: str | Path = "path/to/images") -> str:
    """Python source that runs the exported ONNX ``model`` on ``folder/<class>/<image>`` and prints its top-1."""
    return _PROGRAM.format(model=str(model), folder=str(folder), extensions=tuple(IMAGE_EXTENSIONS))
