"""Bad inputs and faults, tried as a user would: each case must end in the right number or one
clean line (exit 2, no traceback). Prints a table of what each case printed and the tally.

    .venv/bin/python benchmarks/failure_probe.py          # about 120 cases, ~15 min on 2 cores
    .venv/bin/python benchmarks/failure_probe.py --only r3:   # the round-3 review's cases

Runs in a temporary folder with its own store; a tiny digits-vit (depth 1, 2 epochs) keeps
each case to seconds. Outcomes: `one line` (exit 2, a single `psaq: error:` line, no
traceback), `ran` (exit 0; the case says what number or line is right), `TRACEBACK`, `WRONG`
(exit 0 where an error was due, or a wrong number). The multi-step cases (a run, a change on
disk, then the run that must answer right) are in ``failure_scenarios.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # psaq and the tests' impostor servers, from a clean clone without an install

from failure_round3 import Round3, cases as round3_cases, make_fixtures as make_round3_fixtures  # noqa: E402
from failure_scenarios import Scenarios, make_scenario_fixtures  # noqa: E402
PY = sys.executable
TINY = ["--model-arg", "depth=1", "--steps", "3", "--num-samples", "8", "--quiet"]


def sh(args, cwd, env=None, timeout=300, preexec_fn=None):
    proc = subprocess.run(args, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                          capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)
    return proc.returncode, proc.stdout, proc.stderr


def classify(code, out, err, expect_error: bool, expect: str | None = None) -> str:
    if "Traceback" in err or "Traceback" in out:
        return "TRACEBACK"
    if expect_error:
        lines = [l for l in err.strip().splitlines() if l.strip()]
        errors = [l for l in lines if l.startswith("psaq: error:")]
        if code in (2, 130) and len(errors) == 1:
            return "one line"
        return "WRONG"
    return "ran" if code == 0 and (expect is None or expect in out) else "WRONG"


def make_fixtures(root: Path) -> dict:
    """Folders, checkpoints and params files the cases point at."""
    import torch
    from PIL import Image

    from psaq.datasets.digits import digits_split
    from psaq.models import save_checkpoint
    from psaq.models.checkpoint import CLASS_NAMES_KEY

    f = {}
    images, labels = digits_split("test").tensors
    pixels = ((images[:, 0] * 0.5 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).numpy()

    def folder(name, classes=range(10), per=6, start=0, rename=None):
        base = root / name
        for c in classes:
            idx = [i for i in range(len(labels)) if int(labels[i]) == c][start:start + per]
            label = rename(c) if rename else str(c)
            (base / label).mkdir(parents=True, exist_ok=True)
            for i in idx:
                Image.fromarray(pixels[i], mode="L").save(base / label / f"{i}.png")
        return base

    f["digits_png"] = folder("digits_png")
    folder("root/val")
    folder("root/train", start=10)
    f["root"] = root / "root"
    f["subset"] = folder("subset", classes=[0, 2, 3])
    f["eleven"] = folder("eleven", classes=range(10))
    (f["eleven"] / "10").mkdir()
    Image.fromarray(pixels[0], mode="L").save(f["eleven"] / "10" / "x.png")
    f["one_to_ten"] = folder("one_to_ten", rename=lambda c: str(c + 1))
    f["hidden"] = folder("hidden")
    (f["hidden"] / ".ipynb_checkpoints").mkdir()
    f["loop"] = folder("loop")
    (f["loop"] / "0" / "again").symlink_to(f["loop"] / "0")
    f["empty_class"] = folder("empty_class")
    for p in (f["empty_class"] / "3").iterdir():
        p.unlink()
    (root / "file.txt").write_text("x")
    f["file"] = root / "file.txt"
    f["no_classes"] = root / "no_classes"
    f["no_classes"].mkdir()
    f["broken"] = folder("broken")
    next((f["broken"] / "4").iterdir()).write_bytes(b"not a png")

    torch.manual_seed(0)
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3,
                            num_classes=10)
    f["vit"] = save_checkpoint(vit, root / "vit.safetensors")
    bad = {k: v.clone() for k, v in vit.state_dict().items()}  # a copy: the named checkpoint below stays finite
    bad["head.weight"][0, 0] = float("nan")
    torch.save(bad, root / "nan.pt")
    f["nan"] = root / "nan.pt"
    f["corrupt"] = root / "corrupt.safetensors"
    f["corrupt"].write_bytes(b"\x00" * 64)
    f["truncated"] = root / "truncated.safetensors"
    f["truncated"].write_bytes(f["vit"].read_bytes()[: 4000])
    torch.save({"model": vit}, root / "pickled.pt")
    f["pickled"] = root / "pickled.pt"
    swin = timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=2, window_size=4, embed_dim=24,
                             depths=(1, 1), num_heads=(2, 4), num_classes=10)
    f["swin"] = save_checkpoint(swin, root / "swin.safetensors")
    f["named"] = save_checkpoint(vit, root / "named.safetensors", {CLASS_NAMES_KEY: json.dumps(list("abcdefghij"))})

    params = {
        "dup_section": "quant:\n  w_bits: 4\nquant:\n  a_bits: 6\n",
        "dup_key": "quant:\n  w_bits: 4\n  w_bits: 6\n",
        "empty": "",
        "quant_false": "quant: false\n",
        "grid_list": "grid: []\n",
        "bad_yaml": "quant: [\n",
        "unknown_key": "quant:\n  w_bit: 4\n",
        "bad_type": "quant:\n  w_bits: four\n",
        "big_grid": "grid:\n  seeds: [" + ",".join(str(i) for i in range(300)) + "]\n  bits: [W8A8, W4A8]\n",
        "real_no_train": "grid:\n  methods: [real]\nruntime:\n  dataset: " + str(f["digits_png"]) + "\n",
        "missing_dataset": "runtime:\n  dataset: /nowhere/val\n",
        "missing_checkpoint": "model:\n  name: vit_tiny_patch16_224\n  checkpoint: /nowhere.safetensors\n",
        "unknown_model": "model:\n  name: deit_smal_patch16_224\n",
        "unknown_method": "grid:\n  methods: [psaq-noen]\n",
        # valid: the service cases must fail on the service, not on the settings
        "tiny": "model:\n  model_args: {depth: 1}\ntrain:\n  epochs: 2\nsynthesis:\n  steps_per_round: 3\n"
                "  warmup_steps: 1\n  num_samples: 8\ngrid:\n  methods: [gaussian]\n  seeds: [0]\n  bits: [W8A8]\n",
    }
    for name, text in params.items():
        (root / f"{name}.yaml").write_text(text)
        f[f"params_{name}"] = root / f"{name}.yaml"
    f["vit_args"] = ["--model-arg", "img_size=32", "--model-arg", "patch_size=8", "--model-arg", "embed_dim=48",
                     "--model-arg", "depth=1", "--model-arg", "num_heads=3", "--model-arg", "num_classes=10"]
    make_scenario_fixtures(root, f, pixels, labels)
    make_round3_fixtures(root, f, pixels, labels)
    return f


def cases(f: dict) -> list[tuple[str, list[str], bool, dict, str | None]]:
    """(what, argv, an error is due, env, a line the output must hold)."""
    q = [PY, "-m", "psaq.cli", "quantize"]
    vit = ["--model", "vit_tiny_patch16_224", "--model-arg", "img_size=32", "--model-arg", "patch_size=8",
           "--model-arg", "embed_dim=48", "--model-arg", "depth=1", "--model-arg", "num_heads=3",
           "--model-arg", "num_classes=10", "--steps", "3", "--num-samples", "8", "--quiet"]
    out = []
    add = lambda what, argv, err=True, env=None, expect=None: out.append((what, argv, err, env or {}, expect))  # noqa: E731
    add("unknown model name", [*q, "--model", "deit_smal_patch16_224"])
    add("a ResNet", [*q, "--model", "resnet18", "--random-weights", "--dataset", str(f["digits_png"])])
    add("w-bits 9", [*q, *TINY, "--w-bits", "9"])
    add("a-bits 1", [*q, *TINY, "--a-bits", "1"])
    add("w-bits 4.5", [*q, *TINY, "--w-bits", "4.5"], True)
    add("unknown calibration mode", [*q, *TINY, "--calib", "gauss"])
    add("unknown observer", [*q, *TINY, "--act-observer", "msee"])
    add("unknown site set", [*q, *TINY, "--sites", "all"])
    add("unknown estimator", [*q, *TINY, "--entropy-estimator", "pairs"])
    add("unknown precision", [*q, *TINY, "--precision", "fp16"])
    add("unknown compile target", [*q, *TINY, "--compile", "yes"])
    add("cuda graphs without compile", [*q, *TINY, "--cuda-graphs"])
    add("cuda on a CPU machine", [*q, *TINY, "--device", "cuda"])
    add("cuda:7", [*q, *TINY, "--device", "cuda:7"])
    add("device meta", [*q, *TINY, "--device", "meta"])
    add("device gpu", [*q, *TINY, "--device", "gpu"])
    add("seed 2^70", [*q, *TINY, "--seed", str(2**70)])
    add("seed -1", [*q, *TINY, "--seed", "-1"])
    add("train seed -3", [*q, *TINY, "--train-seed", "-3"])
    add("num-samples 0", [*q, *TINY[:-1], "--num-samples", "0"])
    add("steps 0", [*q, "--model-arg", "depth=1", "--steps", "0", "--quiet"])
    add("model-arg without =", [*q, *TINY, "--model-arg", "depth"])
    add("model-arg embed_dim=100 (heads do not divide it)", [*q, *TINY, "--model-arg", "embed_dim=100"])
    add("model-arg depth=0", [*q, "--model-arg", "depth=0", "--steps", "3", "--quiet"])
    add("model-arg unknown key", [*q, *TINY, "--model-arg", "nosuch=1"])
    add("timm model-arg img_size=0", [*q, *vit, "--model-arg", "img_size=0", "--random-weights", "--dataset",
                                      str(f["digits_png"])])
    add("timm model without weights", [*q, *vit, "--dataset", str(f["digits_png"])])
    add("pretrained and random at once", [*q, *vit, "--pretrained", "--random-weights"])
    add("missing checkpoint", [*q, *vit, "--checkpoint", "/nowhere.safetensors", "--dataset", str(f["digits_png"])])
    add("corrupt checkpoint", [*q, *vit, "--checkpoint", str(f["corrupt"]), "--dataset", str(f["digits_png"])])
    add("truncated checkpoint", [*q, *vit, "--checkpoint", str(f["truncated"]), "--dataset", str(f["digits_png"])])
    add("pickled object in a checkpoint", [*q, *vit, "--checkpoint", str(f["pickled"]), "--dataset", str(f["digits_png"])])
    add("checkpoint with a NaN", [*q, *vit, "--checkpoint", str(f["nan"]), "--dataset", str(f["digits_png"])])
    add("checkpoint of another architecture", [*q, *vit, "--checkpoint", str(f["swin"]), "--dataset", str(f["digits_png"])])
    add("checkpoint class names vs folders", [*q, *vit, "--checkpoint", str(f["named"]), "--dataset", str(f["digits_png"])])
    add("timm model, no dataset", [*q, *vit, "--checkpoint", str(f["vit"])])
    add("dataset missing", [*q, *vit, "--checkpoint", str(f["vit"]), "--dataset", "/nowhere"])
    add("dataset is a file", [*q, *vit, "--checkpoint", str(f["vit"]), "--dataset", str(f["file"])])
    add("dataset without class folders", [*q, *vit, "--checkpoint", str(f["vit"]), "--dataset", str(f["no_classes"])])
    add("dataset: a class folder without images", [*q, *vit, "--checkpoint", str(f["vit"]), "--dataset", str(f["empty_class"])])
    add("dataset: 3 of 10 classes", [*q, *vit, "--checkpoint", str(f["vit"]), "--dataset", str(f["subset"])])
    add("dataset: 11 folders, 10 outputs", [*q, *vit, "--checkpoint", str(f["vit"]), "--dataset", str(f["eleven"])])
    add("dataset: an unreadable image", [*q, *TINY, "--dataset", str(f["broken"])])
    add("digits-vit on its digits as PNGs, read with its own normalization (a tiny 1-block model)",
        [*q, *TINY, "--dataset", str(f["digits_png"])], False)
    add("digits-vit: folders 1..10 (its classes are 0..9)", [*q, *TINY, "--dataset", str(f["one_to_ten"])])
    add("hidden folder ignored (ran)", [*q, *TINY, "--dataset", str(f["hidden"])], False)
    add("symlink loop does not hang (ran)", [*q, *TINY, "--dataset", str(f["loop"])], False)
    add("root with train/ and val/ (ran; real from train/)", [*q, *TINY, "--dataset", str(f["root"]), "--calib", "real"], False)
    add("real on a plain folder, no --calib-dataset", [*q, *TINY, "--dataset", str(f["digits_png"]), "--calib", "real"])
    add("real calibrated on the evaluation folder", [*q, *TINY, "--dataset", str(f["digits_png"]), "--calib", "real",
                                                     "--calib-dataset", str(f["digits_png"])])
    add("calib-dataset with a built-in dataset", [*q, *TINY, "--calib-dataset", str(f["digits_png"])])
    add("model's dataset of another shape", [*q, *vit, "--model-arg", "img_size=64", "--random-weights", "--dataset", "digits"])
    add("params file missing", [*q, *TINY, "--params", "/nowhere.yaml"])
    for name in ("dup_section", "dup_key", "empty", "quant_false", "grid_list", "bad_yaml", "unknown_key", "bad_type"):
        add(f"params.yaml: {name.replace('_', ' ')}", [*q, *TINY, "--params", str(f[f"params_{name}"])])
    g = [PY, "-m", "flows.grid", "--params"]
    env = {"MLFLOW_TRACKING_URI": ""}
    add("grid: 600 points without --allow-large-grid", [*g, str(f["params_big_grid"])], True, env)
    add("grid: real without training images", [*g, str(f["params_real_no_train"])], True, env)
    add("grid: dataset missing", [*g, str(f["params_missing_dataset"])], True, env)
    add("grid: checkpoint missing", [*g, str(f["params_missing_checkpoint"])], True, env)
    add("grid: unknown model", [*g, str(f["params_unknown_model"])], True, env)
    add("grid: unknown method", [*g, str(f["params_unknown_method"])], True, env)
    add("grid: duplicate section", [*g, str(f["params_dup_section"])], True, env)
    add("grid: MLflow unreachable", [*g, str(f["params_tiny"])], True,
        {"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    add("grid: MLflow URI with an unknown scheme", [*g, str(f["params_tiny"])], True,
        {"MLFLOW_TRACKING_URI": "ftp://x/y"})
    add("grid: Prefect unreachable", [*g, str(f["params_tiny"])], True, {"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    add("grid: a server that answers Prefect's /health and nothing else", [*g, str(f["params_tiny"])], True,
        {"PREFECT_API_URL": f["health_only"] + "/api"})
    s = [PY, "-m", "flows.dvc_stages"]
    tiny = ["--params", str(f["params_tiny"])]
    add("dvc stage: fp32 before model", [*s, "fp32", *tiny], True)
    add("dvc stage: unknown method", [*s, "samples", "--method", "x", "--seed", "0", *tiny], True)
    add("serve without a Prefect server", [PY, "-m", "flows.serve"], True, {"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    add("train a timm model", [PY, "-m", "psaq.cli", "train", "--model", "deit_tiny_patch16_224"], True)
    # the round-2 review's single-command cases (its multi-step ones are in failure_scenarios.py)
    add("grid: bits [W8A8, W8A8]", [*g, str(f["params_dup_bits"])], True, env)
    add("grid: seeds [0, 0]", [*g, str(f["params_dup_seeds"])], True, env)
    add('grid: bits ["W8A8\\n"]', [*g, str(f["params_newline_bits"])], True, env)
    add("grid: MLflow file: URI", [*g, str(f["params_tiny"])], True, {"MLFLOW_TRACKING_URI": f"file://{f['file'].parent}/mlruns"})
    add("params.yaml: lr 1e30", [*q, *TINY, "--params", str(f["params_lr_1e30"])])
    add("params.yaml: a Latin-1 byte", [*q, *TINY, "--params", str(f["params_latin1"])])
    add("params file is a folder", [*q, *TINY, "--params", str(f["params_dir"])])
    add("params.yaml: train weight_decay -1", [*q, *TINY, "--params", str(f["params_negative_decay"])])
    add("params.yaml: kde_points 1e6 (ran: the KDE is computed in chunks, its memory stays bounded)",
        [*q, *TINY, "--calib", "psaq", "--params", str(f["params_huge_kde"])], False)
    add("num-samples 1e9", [*q, *TINY[:-1], "--num-samples", "1000000000"])
    add("a decompression-bomb image among the test images", [*q, *TINY, "--calib", "gaussian", "--dataset", str(f["bomb"])])
    add("params.yaml: merge keys (<<: {w_bits: 4, a_bits: 6}, a_bits: 8) → W4A8 (ran)",
        [*q, *TINY, "--calib", "gaussian", "--params", str(f["params_merge_keys"])], False, expect="W4A8 ")
    add("params.yaml: runtime.threads 1 (ran, 1 thread)",
        [*q, *TINY, "--calib", "gaussian", "--params", str(f["params_threads"])], False, expect="threads       1")
    out.extend(round3_cases(f, q, TINY, PY))
    return out


def health_only_server() -> str:
    from tests.impostors import HealthOnly, serve

    return f"http://127.0.0.1:{serve(HealthOnly).server_port}"


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="run the cases whose description holds this text (the table is not written)")
    args = ap.parse_args()
    chosen = lambda what: args.only is None or args.only in what  # noqa: E731
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "project").mkdir()
        fixtures = make_fixtures(root / "fixtures")
        fixtures["health_only"] = health_only_server()
        rows, tally = [], {}
        def row(what, outcome, code, said):
            rows.append((what, outcome, code, said[:160]))
            tally[outcome] = tally.get(outcome, 0) + 1
            print(f"{outcome:10s} {code:3d}  {what}: {said[:140]}", flush=True)

        for what, argv, expect_error, env, expect in cases(fixtures):
            if not chosen(what):
                continue
            if env.get("MLFLOW_TRACKING_URI") == "":
                env = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}
            code, out, err = sh(argv, root / "project", env)
            outcome = classify(code, out, err, expect_error, expect)
            scores = " / ".join(" ".join(l.split()[:3]) for l in out.splitlines() if " top-1 " in l)
            said = (err.strip().splitlines() or ["(nothing)"])[-1] if expect_error else (scores or out.strip()[-120:])
            row(what, outcome, code, said)
        scenarios = Scenarios(root, fixtures, sh, PY, TINY)
        multi = scenarios.cases() + Round3(scenarios).cases()
        if any(chosen(what) for what, _ in multi):
            # the scenarios share the tiny model the first cases train
            sh([PY, "-m", "psaq.cli", "quantize", *TINY, "--calib", "gaussian"], root / "project")
        for what, run in multi:
            if not chosen(what):
                continue
            try:
                row(what, *run())
            except subprocess.TimeoutExpired as exc:
                row(what, "HUNG", -1, f"no answer in {exc.timeout:.0f} s")
    print(f"\n{len(rows)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
          + f" ({time.perf_counter() - started:.0f} s)")
    if args.only is not None:
        return
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "failure_probe.md").write_text(
        "| case | outcome | exit | what it printed |\n|---|---|---|---|\n"
        + "\n".join(f"| {w} | {o} | {c} | {s.replace('|', '/')} |" for w, o, c, s in rows)
        + f"\n\n{len(rows)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())) + "\n")


if __name__ == "__main__":
    main()
