"""The probe's cases of the round-3 review: what was read is what is keyed, no file overwrites
another, one definition of top-1, the Python API's refusals, folders walked by a rule, EXIF
orientation, one-channel models, concurrent writers, model arguments read as YAML reads them,
timm EMA checkpoints. Single commands in ``cases``; multi-step ones in ``Round3``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

Result = tuple[str, int, str]

_TOP1 = re.compile(r"^FP32\s+top-1\s+([\d.]+)", re.M)


def make_fixtures(root: Path, f: dict, pixels, labels) -> None:
    import timm
    import torch
    from PIL import Image

    from psaq.models import save_checkpoint

    def folder(name, per=6, copies=1):
        base = root / name
        for c in range(10):
            (base / str(c)).mkdir(parents=True)
            for i in [i for i in range(len(labels)) if int(labels[i]) == c][:per]:
                for k in range(copies):
                    Image.fromarray(pixels[i], mode="L").save(base / str(c) / f"{i}-{k}.png")
        return base

    f["r3_gray"] = folder("r3_gray")
    f["r3_exif"] = folder("r3_exif")
    img = Image.fromarray(pixels[0], mode="L")
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(f["r3_exif"] / "0" / "photo.jpg", exif=exif.tobytes())
    f["r3_ancestor"] = folder("r3_ancestor")
    (f["r3_ancestor"] / "0" / "up").symlink_to(f["r3_ancestor"])  # every class's images, under class 0
    f["r3_big"] = folder("r3_big", per=36, copies=8)  # about 2,900 images: a few seconds of reading
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3, num_classes=10)
    f["r3_gray_vit"] = save_checkpoint(timm.create_model("vit_tiny_patch16_224", in_chans=1, **args),
                                       root / "gray_vit.safetensors")
    f["r3_no_bias"] = save_checkpoint(timm.create_model("vit_tiny_patch16_224", qkv_bias=False, **args),
                                      root / "no_bias.safetensors")
    vit = timm.create_model("vit_tiny_patch16_224", **args)
    torch.save({"epoch": 5, "arch": "vit_tiny_patch16_224", "state_dict_ema": vit.state_dict()}, root / "ema.pth.tar")
    f["r3_ema"] = root / "ema.pth.tar"
    f["r3_repq_twice"] = root / "repq_twice.py"
    f["r3_repq_twice"].write_text(_API.format(body="""
    model = quantize_(tiny(), QuantConfig(w_bits=4, a_bits=4, sites="repq"))
    calibrate(model, images)
    calibrate(model, images * 2)  # would fold the LayerNorm scales into the weights a second time
"""))
    f["r3_nan"] = root / "nan_images.py"
    f["r3_nan"].write_text(_API.format(body="""
    images[0, 0, 0, 0] = float("nan")
    calibrate(quantize_(tiny(), QuantConfig()), images)
"""))


_API = '''\
import sys
import timm, torch
import psaq.families.builtin  # noqa: F401
from psaq.cli import run_entry
from psaq.quant import QuantConfig, calibrate, quantize_


def tiny():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3,
                             num_classes=10).eval()


def main():
    images = torch.randn(8, 3, 32, 32)
{body}
    print("accepted")
    return 0


sys.exit(run_entry(main, False))
'''


def cases(f: dict, q: list[str], tiny: list[str], py: str) -> list:
    """(what, argv, an error is due, env, a line the output must hold)."""
    arch = ["--model", "vit_tiny_patch16_224", "--model-arg", "img_size=32", "--model-arg", "patch_size=8",
            "--model-arg", "embed_dim=48", "--model-arg", "depth=1", "--model-arg", "num_heads=3",
            "--model-arg", "num_classes=10", "--steps", "3", "--num-samples", "8", "--quiet"]
    return [
        ("r3: --model-arg qkv_bias=false loads a checkpoint without q/v biases (ran)",
         [*q, *arch, "--model-arg", "qkv_bias=false", "--checkpoint", str(f["r3_no_bias"]), "--dataset",
          str(f["digits_png"]), "--calib", "gaussian"], False, {}, "FP32 "),
        ("r3: a timm checkpoint holding only state_dict_ema (ran)",
         [*q, *arch, "--checkpoint", str(f["r3_ema"]), "--dataset", str(f["digits_png"]), "--calib", "gaussian"],
         False, {}, "FP32 "),
        ("r3: an in_chans=1 model on a gray folder (ran)",
         [*q, *arch, "--model-arg", "in_chans=1", "--checkpoint", str(f["r3_gray_vit"]), "--dataset",
          str(f["r3_gray"]), "--calib", "gaussian"], False, {}, "FP32 "),
        ("r3: an EXIF-rotated JPEG among the test images (ran, says so)",
         [*q, *tiny, "--calib", "gaussian", "--dataset", str(f["r3_exif"])], False, {}, "EXIF orientation tag"),
        ("r3: a link to the dataset root inside class folder 0 (ran, skipped and said)",
         [*q, *tiny, "--calib", "gaussian", "--dataset", str(f["r3_ancestor"])], False, {},
         "link(s) out of their class folder skipped"),
        ("r3: API: calibrate() a second time on a repq model", [py, str(f["r3_repq_twice"])], True, {}, None),
        ("r3: API: a NaN among the calibration images", [py, str(f["r3_nan"])], True, {}, None),
        ("r3: W2A2 export: ONNX and the simulated model break ties alike (ran)",
         [*q[:-1], "export", *tiny, "--calib", "gaussian", "--w-bits", "2", "--a-bits", "2", "--out", "r3-exports"],
         False, {}, "agreement with simulated 100.00"),
    ]


class Round3:
    """Multi-step cases, each in a fresh project folder that holds the probe's trained tiny model."""

    def __init__(self, scenarios):
        self.s = scenarios

    def _env(self) -> dict:
        return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def _top1(self, out: str) -> float | None:
        m = _TOP1.search(out)
        return float(m.group(1)) if m else None

    def folder_edited_during_a_run(self) -> Result:
        """One image changes back and forth while a run reads the folder, then is restored: the
        run may refuse, but no later run may print a number other than a fresh store's."""
        folder = self.s.root / "r3_edited"
        shutil.copytree(self.s.f["r3_big"], folder)
        victim = sorted((folder / "3").iterdir())[0]
        original, other = victim.read_bytes(), sorted((folder / "5").iterdir())[0].read_bytes()
        p = self.s.project()
        stop = threading.Event()

        def toggle():
            while not stop.is_set():
                victim.write_bytes(other)
                time.sleep(0.05)
                victim.write_bytes(original)
                time.sleep(0.05)

        worker = threading.Thread(target=toggle)
        worker.start()
        try:
            during = self.s.quantize(p, "--dataset", str(folder))
        finally:
            stop.set()
            worker.join()
        victim.write_bytes(original)
        code, out, err = self.s.quantize(p, "--dataset", str(folder))
        truth = self._top1(self.s.quantize(self.s.project(), "--dataset", str(folder))[1])
        got = self._top1(out)
        if "Traceback" in during[1] + during[2] + out + err:
            return "TRACEBACK", code, (during[2] + err).strip()[-160:]
        first = "refused" if during[0] == 2 else f"printed {self._top1(during[1])}"
        outcome = "ran" if code == 0 and got is not None and got == truth else "WRONG"
        return outcome, code, f"during the edits: {first}; after restoring FP32 {got} (a fresh store: {truth})"

    def concurrent_exports(self) -> Result:
        """Two exports of different settings into one folder at once: each checks its own files,
        none replaces the other's."""
        p = self.s.project()
        base = [self.s.py, "-m", "psaq.cli", "export", *self.s.tiny, "--calib", "gaussian", "--out", "shared"]
        procs = [subprocess.Popen([*base, *extra], cwd=p, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=self._env()) for extra in ([], ["--act-observer", "percentile"])]
        outs = [proc.communicate(timeout=300) for proc in procs]
        codes = [proc.returncode for proc in procs]
        files = sorted(x.name for x in (p / "shared").iterdir())
        agree = [re.search(r"agreement with simulated +([\d.]+)", o) for o, _ in outs]
        if any("Traceback" in o + e for o, e in outs):
            return "TRACEBACK", max(codes), outs[0][1][-160:]
        ok = codes == [0, 0] and len(files) == 5 and all(a and a.group(1) == "100.00" for a in agree)
        return ("ran" if ok else "WRONG"), max(codes), f"{len(files)} files; agreement " + \
            ", ".join(a.group(1) if a else "?" for a in agree)

    def concurrent_runs_of_one_point(self) -> Result:
        """Two processes build the same point in one fresh store at once: the same number, nothing set aside."""
        p = self.s.project()
        argv = [self.s.py, "-m", "psaq.cli", "quantize", *self.s.tiny, "--calib", "gaussian"]
        procs = [subprocess.Popen(argv, cwd=p, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=self._env()) for _ in range(2)]
        outs = [proc.communicate(timeout=300) for proc in procs]
        codes = [proc.returncode for proc in procs]
        numbers = [re.findall(r"top-1 +([\d.]+)", o) for o, _ in outs]
        corrupt = list(p.rglob("*.corrupt-*"))
        if any("Traceback" in o + e for o, e in outs):
            return "TRACEBACK", max(codes), outs[0][1][-160:]
        ok = codes == [0, 0] and numbers[0] == numbers[1] and numbers[0] and not corrupt
        return ("ran" if ok else "WRONG"), max(codes), f"top-1 {numbers[0]} and {numbers[1]}; {len(corrupt)} set aside"

    def cases(self) -> list[tuple[str, Callable[[], Result]]]:
        return [
            ("r3: an image edited back and forth while a run reads the folder, then restored", self.folder_edited_during_a_run),
            ("r3: two exports of different settings into one folder at once", self.concurrent_exports),
            ("r3: two runs of one point at once in a fresh store", self.concurrent_runs_of_one_point),
        ]

