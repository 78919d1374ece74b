"""The probe's multi-step cases: faults that need a first run, a change on disk, a signal or a
service before the command that must answer right. One case per class of the round-2 review
(content vs timestamps, bit depth, edited DVC views, the test-image guard, text class names,
MLflow runs per point, grid lists, signals, tracebacks, unclear errors).

Each scenario returns (outcome, exit code, what it printed). Outcomes beyond the probe's:
``warned`` (exit 0 with a warning line, where the number cannot be right), ``stopped`` (a signal
ended the run within seconds: exit 130, one line, no traceback).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

Result = tuple[str, int, str]


def fp32_top1(out: str) -> float | None:
    m = re.search(r"^FP32\s+top-1\s+([\d.]+)", out, re.M)
    return float(m.group(1)) if m else None


def _one_line(code: int, out: str, err: str) -> Result:
    if "Traceback" in out + err:
        return "TRACEBACK", code, err.strip()[-160:]
    errors = [line for line in err.splitlines() if line.startswith("psaq: error:")]
    return ("one line" if code == 2 and len(errors) == 1 else "WRONG"), code, (errors or [err.strip()[-160:]])[-1]


def _same_number(code: int, out: str, err: str, truth: float | None, what: str) -> Result:
    if "Traceback" in out + err:
        return "TRACEBACK", code, err.strip()[-160:]
    got = fp32_top1(out)
    if code != 0 or got is None or truth is None:
        return "WRONG", code, (err.strip().splitlines() or ["(nothing)"])[-1]
    return ("ran" if got == truth else "WRONG"), code, f"FP32 top-1 {got:.2f} ({what} {truth:.2f})"


class Scenarios:
    """Runs commands in fresh project folders that share the tiny digits-vit the probe trained."""

    def __init__(self, root: Path, fixtures: dict, sh: Callable, py: str, tiny: list[str]):
        self.root, self.f, self.sh, self.py, self.tiny = root, fixtures, sh, py, tiny
        self.count = 0

    def project(self) -> Path:
        """A fresh store holding only the trained model (its key does not depend on any folder)."""
        self.count += 1
        path = self.root / f"scenario-{self.count}"
        shutil.copytree(self.root / "project" / "models", path / "models")
        return path

    def quantize(self, cwd: Path, *args: str, env: dict | None = None, **kw):
        return self.sh([self.py, "-m", "psaq.cli", "quantize", *self.tiny, "--calib", "gaussian", *args], cwd, env, **kw)

    # ---- 1. content, not timestamps -------------------------------------------------------
    def swapped_images(self) -> Result:
        """Images of two classes swapped by `mv`, all files of one size and one mtime: a
        fingerprint of sizes and times sees no change."""
        folder = self.root / "uniform"
        shutil.copytree(self.f["uniform"], folder)
        p = self.project()
        first = fp32_top1(self.quantize(p, "--dataset", str(folder))[1])
        zeros, ones = sorted((folder / "0").iterdir()), sorted((folder / "1").iterdir())
        for a, b in zip(zeros, ones):
            tmp = a.with_suffix(".swap")
            os.rename(a, tmp)
            os.rename(b, a)
            os.rename(tmp, b)
        code, out, err = self.quantize(p, "--dataset", str(folder))
        truth = fp32_top1(self.quantize(self.project(), "--dataset", str(folder))[1])
        outcome, code, said = _same_number(code, out, err, truth, "a fresh store says")
        return outcome, code, f"before the swap {first}; after: {said}"

    # ---- 2. bit depth ---------------------------------------------------------------------
    def sixteen_bit(self) -> Result:
        p = self.project()
        truth = fp32_top1(self.quantize(p, "--dataset", str(self.f["digits_png"]))[1])
        code, out, err = self.quantize(p, "--dataset", str(self.f["digits16"]))
        return _same_number(code, out, err, truth, "the same images as 8-bit PNGs")

    # ---- 3. DVC views ---------------------------------------------------------------------
    def edited_view(self) -> Result:
        """Views are hard links into the store: an edit in place changes the store's file too."""
        p = self.project()
        params = ["--params", str(self.f["params_tiny"])]
        stage = [self.py, "-m", "flows.dvc_stages"]
        point = ["--method", "gaussian", "--seed", "0"]
        for upstream in (["data"], ["model"], ["samples", *point]):
            code, out, err = self.sh([*stage, *upstream, *params], p)
            if code:
                return "WRONG", code, (err.strip().splitlines() or [f"{upstream[0]} stage failed"])[-1]
        view = p / "pipeline" / "samples" / "m0" / "gaussian-s0.parquet"
        with open(view, "r+b") as f:  # one byte in the middle, in place
            f.seek(view.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        return _one_line(*self.sh([*stage, "calibrate", *point, "--bits", "W8A8", "--observer", "minmax", *params], p))

    # ---- 4. the test-image guard ----------------------------------------------------------
    def linked_calibration_folders(self) -> Result:
        linked = self.root / "linked_calib"
        linked.mkdir()
        for c in sorted(self.f["digits_png"].iterdir()):
            (linked / c.name).symlink_to(c)
        return _one_line(*self.quantize(self.project(), "--dataset", str(self.f["digits_png"]), "--calib", "real",
                                        "--calib-dataset", str(linked)))

    # ---- 5. text class names --------------------------------------------------------------
    def text_class_names(self) -> Result:
        code, out, err = self.quantize(self.project(), "--model", "vit_tiny_patch16_224", *self.f["vit_args"],
                                       "--checkpoint", str(self.f["vit"]), "--dataset", str(self.f["words"]))
        if "Traceback" in out + err or code != 0:
            return ("TRACEBACK" if "Traceback" in out + err else "WRONG"), code, err.strip()[-160:]
        warning = [line for line in out.splitlines() + err.splitlines() if line.startswith("warning")]
        return ("warned" if warning else "WRONG"), code, (warning or ["no warning"])[0][:160]

    # ---- 6. MLflow: a run per point -------------------------------------------------------
    def mlflow_runs_per_point(self) -> Result:
        p = self.project()
        uri = f"sqlite:///{p / 'mlflow.db'}"
        code, out, err = self.sh([self.py, "-m", "flows.grid", "--params", str(self.f["params_two_seeds"])], p,
                                 {"MLFLOW_TRACKING_URI": uri}, timeout=600)
        if code:
            return _one_line(code, out, err)
        import mlflow

        client = mlflow.tracking.MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("psaq").experiment_id])
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        points = len([line for line in out.splitlines() if ": top-1" in line])
        ok = points == 4 and len(children) == points
        return ("ran" if ok else "WRONG"), code, f"{points} points, {len(children)} MLflow runs"

    # ---- 8. signals -----------------------------------------------------------------------
    def ctrl_c_under_prefect(self) -> Result:
        """Ctrl-C in a terminal reaches the whole foreground process group."""
        p = self.project()
        argv = [self.py, "-m", "flows.quantize", "--calib", "psaq", "--params", str(self.f["params_long"])]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        env.pop("PREFECT_API_URL", None)
        proc = subprocess.Popen(argv, cwd=p, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        # the synthesis has begun once the FP32 evaluation before it is logged (the console shows no
        # task lines; the run's log file has them)
        log = p / ".prefect" / "flow-runs.log"
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not (log.is_file() and "'fp32-m0' - Finished"
                                                                        in log.read_text(errors="replace")):
            time.sleep(0.5)
        time.sleep(5)
        if proc.poll() is not None:
            out, err = proc.communicate()
            return "WRONG", proc.returncode, "ended before Ctrl-C: " + (err.strip().splitlines() or ["(nothing)"])[-1]
        sent = time.time()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return "HUNG", -9, "still running 120 s after Ctrl-C"
        took = time.time() - sent
        lines = [line for line in err.splitlines() if line.startswith("psaq:")]
        if "Traceback" in out + err:
            return "TRACEBACK", proc.returncode, err.strip()[-160:]
        ok = proc.returncode == 130 and took < 30 and len(lines) == 1
        return ("stopped" if ok else "WRONG"), proc.returncode, f"{(lines or ['(nothing)'])[-1]} ({took:.0f} s after Ctrl-C)"

    # ---- 9. what used to be tracebacks ----------------------------------------------------
    def disk_full(self) -> Result:
        """A file-size limit makes every large write fail as a full disk does (EFBIG)."""
        p = self.root / "scenario-disk"
        p.mkdir()
        limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # noqa: E731
        return _one_line(*self.sh([self.py, "-m", "psaq.cli", "quantize", *self.tiny, "--calib", "gaussian"], p,
                                  preexec_fn=limit))

    # ---- 10. what used to be unclear -------------------------------------------------------
    def _vit(self, cwd: Path, checkpoint: Path):
        return self.quantize(cwd, "--model", "vit_tiny_patch16_224", *self.f["vit_args"], "--checkpoint",
                             str(checkpoint), "--dataset", str(self.f["digits_png"]))

    def checkpoint_named_pt(self) -> Result:
        p = self.project()
        truth = fp32_top1(self._vit(p, self.f["vit"])[1])
        return _same_number(*self._vit(p, self.f["safetensors_pt"]), truth, "the same weights as .safetensors")

    def module_prefixed(self) -> Result:
        p = self.project()
        truth = fp32_top1(self._vit(p, self.f["vit"])[1])
        return _same_number(*self._vit(p, self.f["module_prefixed"]), truth, "the same weights unprefixed")

    def tilde_dataset(self) -> Result:
        p = self.project()
        truth = fp32_top1(self.quantize(p, "--dataset", str(self.f["digits_png"]))[1])
        (p / "params.yaml").write_text("runtime:\n  dataset: ~/digits_png\n")
        return _same_number(*self.quantize(p, env={"HOME": str(self.f["home"])}), truth, "the same folder spelled out")

    def digits_folder_here(self) -> Result:
        """A folder named like the built-in dataset in the working directory."""
        p = self.project()
        shutil.copytree(self.f["digits_png"], p / "digits")
        return _one_line(*self.quantize(p, "--dataset", "digits"))

    def cases(self) -> list[tuple[str, Callable[[], Result]]]:
        return [
            ("images of two classes swapped by mv, sizes and times unchanged", self.swapped_images),
            ("16-bit PNGs (the same digits)", self.sixteen_bit),
            ("DVC: a view edited in place, then the next stage", self.edited_view),
            ("real: calibration class folders symlinked to the evaluation folder", self.linked_calibration_folders),
            ("class folders zero..nine, a checkpoint without class names", self.text_class_names),
            ("MLflow: 2 methods x 2 seeds at W8A8 get 4 runs", self.mlflow_runs_per_point),
            ("Ctrl-C during synthesis under Prefect (python -m flows.quantize)", self.ctrl_c_under_prefect),
            ("disk full (a 64 KB file-size limit) while writing the model", self.disk_full),
            ("a safetensors checkpoint named .pt", self.checkpoint_named_pt),
            ("a state dict whose keys all start with module.", self.module_prefixed),
            ("params.yaml runtime.dataset: ~/digits_png", self.tilde_dataset),
            ("--dataset digits with a folder ./digits in the working directory", self.digits_folder_here),
        ]


def make_scenario_fixtures(root: Path, f: dict, pixels, labels) -> None:
    """Folders and params files the scenarios and the single-command cases below need."""
    import numpy as np
    from PIL import Image

    def images(name, save, rename=str, per=6):
        base = root / name
        for c in range(10):
            (base / rename(c)).mkdir(parents=True)
            for i in [i for i in range(len(labels)) if int(labels[i]) == c][:per]:
                save(pixels[i], base / rename(c) / f"{i}.png")
        return base

    # uncompressed PNGs are all one size; one mtime for all
    f["uniform"] = images("uniform", lambda px, path: Image.fromarray(px, mode="L").save(path, compress_level=0))
    for path in f["uniform"].rglob("*.png"):
        os.utime(path, ns=(1_700_000_000_000_000_000,) * 2)
    f["digits16"] = images("digits16", lambda px, path: Image.fromarray(px.astype(np.uint16) * 257).save(path))
    names = "zero one two three four five six seven eight nine".split()
    f["words"] = images("words", lambda px, path: Image.fromarray(px, mode="L").save(path), rename=lambda c: names[c])
    (root / "bomb").mkdir()
    for c in range(10):
        shutil.copytree(f["digits_png"] / str(c), root / "bomb" / str(c))
    Image.new("1", (20000, 20000)).save(root / "bomb" / "3" / "bomb.png")  # 400 M pixels, a few kB on disk
    f["bomb"] = root / "bomb"
    home = root / "home"
    shutil.copytree(f["digits_png"], home / "digits_png")
    f["home"] = home

    tiny_grid = "model:\n  model_args: {depth: 1}\ntrain:\n  epochs: 2\nsynthesis:\n  steps_per_round: 3\n" \
                "  warmup_steps: 1\n  num_samples: 8\n"
    texts = {
        "two_seeds": tiny_grid + "grid:\n  methods: [gaussian, gaussian-clamped]\n  seeds: [0, 1]\n  bits: [W8A8]\n",
        "long": "model:\n  model_args: {depth: 1}\nsynthesis:\n  steps_per_round: 50000\n  num_samples: 8\n",
        "dup_bits": "grid:\n  bits: [W8A8, W8A8]\n",
        "dup_seeds": "grid:\n  seeds: [0, 0]\n",
        "newline_bits": 'grid:\n  bits: ["W8A8\\n"]\n',
        "lr_1e30": "synthesis:\n  lr: 1e30\n",
        "negative_decay": "train:\n  weight_decay: -1\n",
        "huge_kde": "synthesis:\n  kde_points: 1000000\n",
        "merge_keys": "quant:\n  <<: {w_bits: 4, a_bits: 6}\n  a_bits: 8\n",
        "threads": "runtime:\n  threads: 1\n",
    }
    for name, text in texts.items():
        (root / f"{name}.yaml").write_text(text)
        f[f"params_{name}"] = root / f"{name}.yaml"
    (root / "latin1.yaml").write_bytes("quant:\n  w_bits: 4  # café\n".encode("latin-1"))
    f["params_latin1"] = root / "latin1.yaml"
    (root / "params_dir").mkdir()
    f["params_dir"] = root / "params_dir"
    import torch

    state = {k: v for k, v in __import__("safetensors.torch", fromlist=["load_file"]).load_file(f["vit"]).items()}
    torch.save({f"module.{k}": v for k, v in state.items()}, root / "module_prefixed.pth")
    f["module_prefixed"] = root / "module_prefixed.pth"
    shutil.copy(f["vit"], root / "safetensors_named.pt")
    f["safetensors_pt"] = root / "safetensors_named.pt"
