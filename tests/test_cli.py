"""The command line: bad input gets one line and exit 2; the real timm + folder path runs end to end."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from psaq.cli import main
from psaq.models import save_checkpoint
from tests.tiny import tiny_vit

VIT_ARGS = ["--model", "vit_tiny_patch16_224", "--model-arg", "img_size=32", "--model-arg", "patch_size=8",
            "--model-arg", "embed_dim=48", "--model-arg", "depth=2", "--model-arg", "num_heads=3",
            "--model-arg", "num_classes=3"]


@pytest.fixture(autouse=True)
def project(tmp_path, monkeypatch):
    """Each test runs in its own project folder: its own store, no params.yaml."""
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("PSAQ_PROJECT", raising=False)
    return folder


@pytest.fixture
def dataset_root(tmp_path):
    """An ImageNet-style root: train/ and val/, each with 3 class folders of 4 images."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b", "c"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / split / c / f"{i}.png")
    return tmp_path / "data"


@pytest.fixture
def image_folder(dataset_root):
    return dataset_root / "val"


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tiny_vit(num_classes=3), tmp_path / "vit.safetensors")


@pytest.mark.parametrize("calib", ["real", "gaussian", "psaq"])
def test_quantize_timm_model_on_a_dataset_root(calib, dataset_root, checkpoint, capsys):
    code = main(["quantize", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(dataset_root),
                 "--calib", calib, "--num-samples", "4", "--steps", "3", "--device", "cpu", "--quiet",
                 "--w-bits", "4", "--a-bits", "8"])
    out = capsys.readouterr().out
    assert code == 0
    assert "FP32          top-1" in out and "W4A8          top-1" in out and "12 test images" in out
    assert f"evaluate on   {dataset_root / 'val'}" in out
    if calib == "real":
        assert f"calibrate on  real images from {dataset_root / 'train'}" in out
    else:
        assert "synthesized from the model (no data)" in out


def test_psaq_v2_from_the_command_line_on_a_timm_model(project, dataset_root, checkpoint, capsys):
    (project / "params.yaml").write_text("adaptive:\n  sample_steps: 2\n  student_steps: 3\n")
    code = main(["quantize", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(dataset_root),
                 "--calib", "psaq-v2", "--num-samples", "4", "--steps", "3", "--v2-rounds", "2", "--device", "cpu",
                 "--w-bits", "4", "--a-bits", "8"])
    out = capsys.readouterr().out
    assert code == 0 and "stage         reconstruct built" in out and "W4A8          top-1" in out
    assert "psaq-v2       2 rounds in" in out and "KL(teacher || student) on its samples" in out
    assert "on held-out samples" in out and "on the noise probe" in out  # the two checks the student never trains on


def test_the_four_bit_recipe_from_the_command_line(dataset_root, checkpoint, capsys):
    """--sites repq --reconstruct: the reconstruct stage runs between calibrate and evaluate."""
    args = ["quantize", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(dataset_root), "--calib", "gaussian",
            "--num-samples", "4", "--device", "cpu", "--w-bits", "4", "--a-bits", "4", "--sites", "repq"]
    assert main([*args, "--reconstruct", "--reconstruct-iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "stage         reconstruct built" in out and "W4A4          top-1" in out
    assert main(args) == 0  # without --reconstruct the stage hands the calibrated model on
    assert "stage         reconstruct passed" in capsys.readouterr().out


def test_real_on_a_plain_folder_needs_a_calibration_folder(image_folder, dataset_root, checkpoint, capsys):
    args = ["quantize", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(image_folder), "--calib", "real",
            "--num-samples", "4", "--device", "cpu", "--quiet"]
    assert main(args) == 2
    assert "needs training images and none were given: pass --calib-dataset" in capsys.readouterr().err
    assert main([*args, "--calib-dataset", str(dataset_root / "train")]) == 0
    assert f"real images from {dataset_root / 'train'}" in capsys.readouterr().out


BAD_INPUTS = [
    (["--model", "deit_tiny_patch16_22"], "did you mean deit_tiny_patch16_224"),
    (["--w-bits", "9"], "w_bits must be from 2 to 8"),
    (["--a-bits", "1"], "a_bits must be from 2 to 8"),
    (["--w-bits", "4.5"], "argument --w-bits: invalid int value: '4.5'"),  # argparse's own errors: one line too
    (["--calib", "gauss"], "unknown calibration mode 'gauss'"),
    (["--act-observer", "mse2"], "unknown observer"),
    (["--device", "cuda:7"], "no CUDA GPU"),
    (["--precision", "fp16"], "unknown synthesis precision 'fp16'"),
    (["--compile", "yes"], "unknown compile target 'yes'"),
    (["--cuda-graphs"], "set compile to kde, model or all"),
    (["--device", "meta"], "device 'meta' cannot run psaq's stages"),
    (["--device", "gpu0"], "'gpu0' is not a device name"),
    (["--seed", str(2**70)], "seed must be an integer from 0 to 2^63-1"),
    (["--train-seed", "-1"], "train_seed must be an integer from 0 to 2^63-1"),
    (["--model-arg", "depth=0"], "is not a supported vision transformer"),
    (["--model-arg", "embed_dim=100"], "model 'digits-vit' rejected its arguments {'embed_dim': 100}"),
    (["--model-arg", "nosuch"], "--model-arg expects key=value"),
    (["--sites", "officail"], "did you mean official"),
    (["--entropy-estimator", "pairs"], "unknown entropy estimator 'pairs'"),
    (["--calib-dataset", "."], "--calib-dataset (runtime.calib_dataset) applies to image folders; 'digits' brings"),
    (["--reconstruct", "--reconstruct-iters", "0"], "reconstruct.iters must be a positive integer, got 0"),
    (["--params", "missing.yaml"], "params file 'missing.yaml' does not exist"),
]


@pytest.mark.parametrize("extra,message", BAD_INPUTS)
def test_bad_input_is_one_line(extra, message, capsys):
    if extra[:1] == ["--device"] and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["quantize", "--quiet", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("psaq: error:") and message in err and "\n" not in err


def test_bad_checkpoint_and_dataset(tmp_path, image_folder, checkpoint, capsys):
    (tmp_path / "corrupt.safetensors").write_bytes(b"xx")
    cases = [
        ([*VIT_ARGS, "--checkpoint", str(tmp_path / "missing.safetensors")], "does not exist"),
        ([*VIT_ARGS, "--checkpoint", str(tmp_path / "corrupt.safetensors")], "corrupt"),
        ([*VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(tmp_path / "nowhere")], "nowhere' does not exist"),
        ([*VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(image_folder / "a")], "no class folders"),
        ([*VIT_ARGS, "--checkpoint", str(checkpoint)], "has no built-in dataset: set runtime.dataset (or --dataset)"),
        ([*VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(image_folder), "--cuda-graphs", "--compile", "kde"],
         "cuda_graphs needs a CUDA device, but synthesis runs on cpu"),
    ]
    for args, message in cases:
        assert main(["quantize", "--quiet", "--device", "cpu", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_export_writes_onnx_and_integer_files(image_folder, checkpoint, tmp_path, capsys):
    out = tmp_path / "exports"
    code = main(["export", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(image_folder),
                 "--calib", "gaussian", "--num-samples", "4", "--device", "cpu", "--quiet", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3, names
    assert any(re.fullmatch(r"vit_tiny_patch16_224-W8A8-gaussian-seed0-[0-9a-f]{16}\.onnx", n) for n in names)
    assert any(n.endswith(".int.safetensors") for n in names) and any(re.search(r"-fp32-[0-9a-f]{16}\.onnx$", n)
                                                                        for n in names)
    assert "ONNX          top-1" in text and "MatMulIntegerToFloat" in text
    # another configuration into the same folder: new files beside the first, none replaced
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["export", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(image_folder),
                 "--calib", "gaussian", "--num-samples", "4", "--device", "cpu", "--quiet", "--out", str(out),
                 "--act-observer", "percentile"]) == 0
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert all(after[name] == data for name, data in before.items()) and len(after) == 5  # the FP32 file is shared


def test_the_printed_program_runs_the_onnx_file_with_psaqs_top1(checkpoint, tmp_path, capsys):
    """The program ``psaq export`` prints needs only ONNX Runtime, NumPy, Pillow and the file's metadata,
    and scores the folder as psaq's own check of the ONNX file did (odd sizes: the resize and crop matter)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "odd"
    for c in ("a", "b", "c"):
        (folder / c).mkdir(parents=True)
        for i in range(6):
            h, w = rng.integers(30, 70, size=2)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / c / f"{i}.png")
    out = tmp_path / "exports"
    code = main(["export", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(folder), "--calib", "gaussian",
                 "--num-samples", "4", "--device", "cpu", "--quiet", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    reported = re.search(r"ONNX +top-1 +([\d.]+)", text).group(1)
    program = text[text.index("import json, pathlib"):]
    assert str(folder) in program and str(out) in program
    ran = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"top-1 {reported} % over 18 images"
    # and its pixels are psaq's own evaluation transform's, image by image
    from psaq.data import as_rgb8, eval_transform
    from psaq.models import ModelConfig, load_model

    namespace: dict = {}
    exec(compile(program, "printed", "exec"), namespace)  # the program under test
    model = load_model(ModelConfig(VIT_ARGS[1], checkpoint=str(checkpoint), model_args={
        "img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3, "num_classes": 3}))
    transform = eval_transform(model.spec)
    for path in sorted(folder.rglob("*.png"))[:6]:
        with Image.open(path) as img:
            expected = transform(as_rgb8(img, str(path))).numpy()
        np.testing.assert_allclose(namespace["pixels"](path), expected, atol=1e-5)
    capsys.readouterr()


def test_the_onnx_file_carries_its_preprocessing_and_no_store_path(checkpoint, image_folder, tmp_path, capsys):
    import json

    import onnx

    out = tmp_path / "exports"
    assert main(["export", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(image_folder), "--calib",
                 "gaussian", "--num-samples", "4", "--device", "cpu", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    [path] = [p for p in out.glob("*.onnx") if "fp32" not in p.name]
    meta = {e.key: e.value for e in onnx.load(str(path)).metadata_props}
    pre = json.loads(meta["psaq.preprocessing"])
    assert pre["crop"] == [32, 32] and pre["mode"] == "RGB" and len(pre["mean"]) == 3 and pre["resize"] >= 32
    assert not any(str(tmp_path) in v for v in meta.values())  # nothing names this machine's folders


def test_unsupported_architecture_is_refused(capsys):
    assert main(["export", "--model", "resnet18", "--quiet", "--device", "cpu"]) == 2
    assert "not a supported vision transformer" in capsys.readouterr().err


def test_no_traceback_in_a_real_process(project):
    proc = subprocess.run([sys.executable, "-m", "psaq.cli", "quantize", "--w-bits", "12"],
                          capture_output=True, text=True, timeout=120, cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "psaq: error: w_bits must be from 2 to 8, got 12"


def test_file_system_errors_are_one_line(capsys):
    import errno

    from psaq.cli import run_entry

    def full_disk():
        raise OSError(errno.ENOSPC, "No space left on device", "/data/samples/x.parquet")

    assert run_entry(full_disk, debug=False) == 2
    assert capsys.readouterr().err.strip() == "psaq: error: No space left on device: '/data/samples/x.parquet'"
    with pytest.raises(OSError):
        run_entry(full_disk, debug=True)


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    for text in ("--checkpoint", "--model-arg", "--dataset", "--device", "psaq-noent", "examples:"):
        assert text in out


def test_near_chance_on_a_folder_warns_with_the_folder_order(tmp_path):
    from psaq.cli import chance_warning

    for name in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"):
        (tmp_path / "data" / name).mkdir(parents=True)
    warning = chance_warning(9.33, str(tmp_path / "data"))
    assert warning and "near chance (10 %)" in warning and "eight, five, four, nine, one, seven, …" in warning
    assert chance_warning(92.0, str(tmp_path / "data")) is None
    assert chance_warning(9.33, None) is None  # the built-in dataset: its order is the model's


def _help_line(argv: list[str], flag: str) -> str:
    """The help text of one flag, its wrapped lines joined."""
    from psaq.cli import build_parser

    parser = build_parser(argv)
    sub = next(a for a in parser._actions if a.dest == "command").choices[argv[0]]
    return " ".join(next(a for a in sub._actions if flag in a.option_strings).help.split())


def test_help_shows_the_library_default_without_a_params_file():
    assert _help_line(["quantize"], "--w-bits").endswith("(default: 8)")
    assert _help_line(["export"], "--weight-type").endswith("(default: uint8)")


def test_help_shows_the_params_file_default_and_where_it_comes_from(project):
    (project / "params.yaml").write_text("quant:\n  w_bits: 4\n  a_bits: 8\nexport:\n  weight_type: int8\n")
    assert _help_line(["quantize"], "--w-bits").endswith("(default: 4, from params.yaml; library default 8)")
    assert _help_line(["quantize"], "--a-bits").endswith("(default: 8)")  # the same value as the library's
    assert _help_line(["export"], "--weight-type").endswith("(default: int8, from params.yaml; library default uint8)")
    other = project / "other.yaml"
    other.write_text("quant:\n  w_bits: 6\n")
    assert _help_line(["quantize", "--params", str(other)], "--w-bits").endswith(
        f"(default: 6, from {other}; library default 8)")


def test_help_of_a_broken_params_file_falls_back_to_the_library_defaults(project):
    (project / "params.yaml").write_text("quant:\n  w_bits: nine\n")
    assert _help_line(["quantize"], "--w-bits").endswith("(default: 8)")


def test_a_gray_model_on_a_folder_with_a_rotated_photo(tmp_path, capsys):
    """in_chans=1: the folder is read as gray (a traceback before); an EXIF-rotated JPEG is read as
    stored, as the official loader does, and the run says so in one line."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "gray"
    for c in ("a", "b", "c"):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (36, 36), dtype=np.uint8), mode="L").save(folder / c / f"{i}.png")
    img = Image.fromarray(rng.integers(0, 255, (36, 40), dtype=np.uint8), mode="L")
    exif = img.getexif()
    exif[0x0112] = 8
    img.save(folder / "a" / "photo.jpg", exif=exif.tobytes())
    torch.manual_seed(0)
    path = save_checkpoint(tiny_vit(num_classes=3, in_chans=1), tmp_path / "gray.safetensors")
    code = main(["quantize", *VIT_ARGS, "--model-arg", "in_chans=1", "--checkpoint", str(path), "--dataset",
                 str(folder), "--calib", "gaussian", "--num-samples", "4", "--device", "cpu", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "10 test images" in out and "1 test image(s) carry an EXIF orientation tag" in out


def test_a_headless_backbone_from_the_command_line(dataset_root, checkpoint, capsys):
    """A classifier's checkpoint quantized as a backbone: its head removed, scored by k-NN over its
    own features with train/ as the index; label-needing modes refused before any stage."""
    args = ["quantize", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(dataset_root), "--headless",
            "--num-samples", "4", "--steps", "3", "--device", "cpu", "--quiet"]
    assert main([*args, "--calib", "gaussian"]) == 0
    out = capsys.readouterr().out
    assert "no classifier: k-NN top-1, 20 neighbours among 12 training images" in out
    assert re.search(r"FP32          k-NN top-1 +[\d.]+", out)
    assert re.search(r"W8A8          k-NN top-1 +[\d.]+ .* feature cosine 0\.9\d+", out)
    assert main([*args, "--calib", "psaq"]) == 2
    err = capsys.readouterr().err
    assert "'psaq' draws a class per image" in err and err.count("\n") == 1
    assert not list(Path("data").glob("samples/*psaq*"))  # refused before its samples were made
    assert main([*args, "--calib", "psaq-v2"]) == 2
    assert "--v2-discrepancy features" in capsys.readouterr().err
    (Path("params.yaml")).write_text("adaptive:\n  sample_steps: 2\n  student_steps: 3\n")
    assert main([*args, "--calib", "psaq-v2", "--v2-discrepancy", "features", "--v2-rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "feature error ‖S − T‖²/‖T‖² on its samples" in out and "feature cosine" in out


def test_a_headless_export_checks_features_not_classes(dataset_root, checkpoint, capsys, tmp_path):
    args = ["export", *VIT_ARGS, "--checkpoint", str(checkpoint), "--dataset", str(dataset_root), "--headless",
            "--calib", "gaussian", "--num-samples", "4", "--device", "cpu", "--quiet", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    out = capsys.readouterr().out
    cosine = float(re.search(r"features: cosine with the simulated model's ([\d.]+)", out).group(1))
    assert cosine > 0.999 and "outputs the backbone's pooled features (48 per image)" in out
    import onnxruntime as ort

    [onnx] = (tmp_path / "out").glob("vit_tiny*-W8A8-*.onnx")
    assert ort.InferenceSession(str(onnx)).get_outputs()[0].shape[-1] == 48
