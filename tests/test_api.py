"""The front door: the README's Python API example runs as written, and the verbs need no imports
beyond `import psaq` (families register themselves, the input spec comes from the model)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HAVE_FASHION = all((Path("/usr/share/datasets/fashion-mnist") / f"{n}.gz").is_file()
                   for n in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


def _example() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- api-example:begin -->\s*```python\n(.*?)```\s*<!-- api-example:end -->", text, re.S)
    assert block, "the README's Python API example is gone"
    return block.group(1)


@pytest.mark.skipif(not HAVE_FASHION, reason="dataset-fashion-mnist is not installed (make setup installs it)")
@pytest.mark.cost(15)
def test_the_readme_example_runs_as_written(tmp_path):
    ran = subprocess.run([sys.executable, "-c", _example()], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                              "HOME": str(Path.home())})
    assert ran.returncode == 0, ran.stderr[-2000:]
    fp32, w4a8, agreement = map(float, re.search(r"FP32 ([\d.]+)  W4A8 ([\d.]+)  agreement ([\d.]+)", ran.stdout).groups())
    assert fp32 == 87.54 and 80 < w4a8 <= 90 and agreement > 90  # the shipped model's top-1, as it records
    assert (tmp_path / "fashion-vit-w4a8.onnx").stat().st_size > 100_000


def test_a_plain_timm_model_needs_nothing_but_import_psaq():
    """In a fresh interpreter: no family import by hand, no input spec given."""
    code = """
import psaq, timm, torch
torch.manual_seed(0)
model = timm.create_model("deit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=10)
images = psaq.synthesize(model, psaq.SynthesisConfig(rounds=1, steps_per_round=3, num_samples=4), progress=False).images
quantized = psaq.quantize(model, images)
result = psaq.evaluate(quantized, (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))))
print(tuple(images.shape), type(quantized).__name__, result.count)
"""
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "(4, 3, 32, 32) VisionTransformer 8"


def test_the_front_door_lists_its_verbs_and_none_is_shadowed():
    import psaq

    for name in psaq.__all__:
        value = getattr(psaq, name)
        assert not type(value).__name__ == "module", f"psaq.{name} is a module, not the API's {name}"
    assert {"load_model", "synthesize", "quantize", "evaluate", "export_onnx"} <= set(dir(psaq))
    with pytest.raises(AttributeError):
        psaq.nosuch


@pytest.mark.skipif(not HAVE_FASHION, reason="dataset-fashion-mnist is not installed (make setup installs it)")
def test_a_headless_backbone_through_the_front_door():
    """``headless=True`` loads the classifier's backbone; ``psaq.evaluate`` then scores it by k-NN
    with ``train=`` as the index, and the classifier's top-1 refuses it in one line."""
    import torch
    from torch.utils.data import Subset

    import psaq
    from psaq.errors import ConfigError

    backbone = psaq.load_model("fashion-vit", pretrained=True, headless=True)
    torch.manual_seed(0)
    quantized = psaq.quantize(backbone, torch.randn(8, 1, 28, 28))
    test, train = psaq.test_data(backbone), Subset(psaq.train_data(backbone), range(500))
    fp32 = psaq.evaluate(backbone, test, train=train, limit=300)
    w8a8 = psaq.evaluate(quantized, test, train=train, reference=fp32, reference_model=backbone, limit=300)
    assert isinstance(w8a8, psaq.FeatureEvalResult) and w8a8.index_size == 500 and w8a8.count == 300
    assert fp32.top1 > 60 and 0.9 < w8a8.cosine < 1 and w8a8.agreement > 80
    with pytest.raises(ConfigError, match="no classifier .* k-NN"):
        psaq.evaluation.evaluate(backbone.model, test)
