"""psaq: data-free post-training quantization of vision transformers (PSAQ-ViT).

    import psaq

    loaded = psaq.load_model("fashion-vit", pretrained=True)
    images = psaq.synthesize(loaded).images
    quantized = psaq.quantize(loaded, images, psaq.QuantConfig(w_bits=4, a_bits=8))
    print(psaq.evaluate(quantized, psaq.test_data(loaded)).top1)

The verbs live in ``psaq.api``; they and the configs are imported on first use, so ``import psaq``
(and the ``psaq`` command's start) stays light. The library has no orchestration imports:
Prefect, MLflow and DVC live in ``tasks/`` and ``flows/``. Everything here takes ``device``
(and, where it applies, ``dtype``) as parameters.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name → the module that defines it (no name here is also a submodule's: importing the submodule
# would set the package attribute to it, and the verb would be shadowed)
_API = {
    "load_model": "psaq.api", "synthesize": "psaq.api", "quantize": "psaq.api", "evaluate": "psaq.api",
    "export_onnx": "psaq.api", "test_data": "psaq.api", "train_data": "psaq.api", "spec_of": "psaq.api",
    "quantize_": "psaq.quant", "calibrate": "psaq.quant", "calibration": "psaq.quant",
    "ModelConfig": "psaq.models", "SynthesisConfig": "psaq.synth", "QuantConfig": "psaq.quant",
    "ExportConfig": "psaq.quant.onnx_export", "InputSpec": "psaq.input_spec", "EvalResult": "psaq.evaluation",
    "FeatureEvalResult": "psaq.feature_evaluation",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'psaq' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
