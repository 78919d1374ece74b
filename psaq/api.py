"""psaq's front door: a handful of verbs over the library, reachable as ``psaq.<verb>``.

    import psaq

    loaded = psaq.load_model("fashion-vit", pretrained=True)          # or a timm name + checkpoint=
    images = psaq.synthesize(loaded.model).images                       # PSAQ-ViT's calibration images
    quantized = psaq.quantize(loaded.model, images, psaq.QuantConfig(w_bits=4, a_bits=8))
    print(psaq.evaluate(quantized, psaq.test_data(loaded)).top1)
    psaq.export_onnx(quantized, "model.onnx")

Every verb takes ``device``; nothing moves to a GPU unasked. The defaults are the official
code's numerics. The model families (ViT/DeiT, Swin) register themselves on first use.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from psaq.input_spec import is_headless
from psaq.data import InputSpec, loader, open_data, spec_from_timm
from psaq.errors import DatasetError
from psaq.evaluation import EvalResult, evaluate as _evaluate
from psaq.feature_evaluation import FeatureEvalResult, evaluate_features
from psaq.models import LoadedModel, ModelConfig, load_model as _load_model
from psaq.quant import QuantConfig, quantized_copy
from psaq.quant.onnx_export import ExportConfig, export_onnx as _export_onnx
from psaq.quant.quantize import require_calibrated
from psaq.synth import SynthesisConfig, synthesize as _synthesize
from psaq.synth.result import SynthesisResult


def load_model(name: str, *, pretrained: bool = False, checkpoint: str | Path | None = None,
               headless: bool = False, device: str | torch.device = "cpu", **model_args) -> LoadedModel:
    """A model by name, in eval mode: psaq's own (``fashion-vit``, ``fashion-swin``, ``digits-vit``;
    ``pretrained=True`` for the weights psaq ships) or any timm ViT/DeiT/Swin (``pretrained=True``
    for timm's cache, ``checkpoint=`` for a local file); ``model_args`` are timm's keywords.
    ``headless=True``: the backbone alone, its classifier removed after loading.
    Returns ``.model``, ``.spec`` (input size, normalization, classes) and ``.dataset``."""
    return _load_model(ModelConfig(name, checkpoint=str(checkpoint) if checkpoint else None, pretrained=pretrained,
                                   model_args=model_args, headless=headless), device=device)


def spec_of(model: nn.Module | LoadedModel) -> InputSpec:
    """What ``model`` takes: as psaq loaded it (``load_model``, also on its quantized copies), else
    from the timm model's config."""
    if isinstance(model, LoadedModel):
        return model.spec
    return getattr(model, "psaq_input_spec", None) or spec_from_timm(model)


def synthesize(model: nn.Module | LoadedModel, config: SynthesisConfig | None = None, *, spec: InputSpec | None = None,
               device: str | torch.device | None = None, progress: bool = True) -> SynthesisResult:
    """Calibration images made from ``model`` alone (PSAQ-ViT by default: ``SynthesisConfig()``);
    ``.images`` are float32 on the CPU in the model's normalized input space."""
    spec = spec or spec_of(model)
    net = model.model if isinstance(model, LoadedModel) else model
    return _synthesize(net, config or SynthesisConfig(), spec, device, progress=progress)


def quantize(model: nn.Module | LoadedModel, images: torch.Tensor, config: QuantConfig | None = None, *,
             device: str | torch.device = "cpu") -> nn.Module:
    """A quantized copy of ``model`` (the float model is left as it is), its activation ranges
    calibrated on ``images`` (W8A8 at the official sites by default: ``QuantConfig()``).
    ``psaq.quantize_`` and ``psaq.calibrate`` are the same in two steps, in place."""
    net = model.model if isinstance(model, LoadedModel) else model
    return quantized_copy(net, config or QuantConfig(), images, device)


def test_data(model: LoadedModel, dataset: str | None = None, batch_size: int = 128) -> DataLoader:
    """The evaluation images of ``model``'s own dataset, or of ``dataset`` (a folder of class
    folders, or a root holding ``train/`` and ``val/``), read with the model's own transform."""
    return loader(open_data(model.spec, dataset, None, model.dataset).eval_set, batch_size)


def train_data(model: LoadedModel, dataset: str | None = None) -> Dataset:
    """The training images of ``model``'s own dataset, or of a root holding ``train/`` and
    ``val/``: what ``real`` calibrates on and a backbone's k-NN index holds."""
    data = open_data(model.spec, dataset, None, model.dataset)
    if data.calib_set is None:
        raise DatasetError(f"'{dataset}' has no training images: pass a root holding train/ and val/")
    return data.calib_set


def evaluate(model: nn.Module | LoadedModel, data: DataLoader | tuple[torch.Tensor, torch.Tensor], *,
             reference: EvalResult | FeatureEvalResult | None = None, device: str | torch.device = "cpu",
             limit: int | None = None, train: Dataset | None = None, reference_model: nn.Module | LoadedModel | None = None
             ) -> EvalResult | FeatureEvalResult:
    """Top-1, top-5 and (against a ``reference`` result, e.g. the float model's) agreement;
    ``data`` is a DataLoader of (images, labels) or one (images, labels) pair of tensors.

    A headless backbone is scored by k-NN over its own features with ``train`` (e.g.
    ``psaq.train_data(loaded)``) as the index, and, given ``reference_model`` (the float backbone),
    by the cosine per output token with it (``psaq.feature_evaluation``)."""
    net = model.model if isinstance(model, LoadedModel) else model
    if isinstance(data, tuple):
        data = loader(TensorDataset(*data), 128)
    predictions = reference.predictions if reference is not None else None
    if is_headless(net):
        ref = reference_model.model if isinstance(reference_model, LoadedModel) else reference_model
        return evaluate_features(net, data, train, device=device, reference=ref, reference_predictions=predictions,
                                 limit=limit)
    return _evaluate(net, data, device, predictions, limit)


def export_onnx(quantized: nn.Module, path: str | Path, *, spec: InputSpec | None = None,
                config: ExportConfig | None = None) -> Path:
    """The calibrated model as a QDQ ONNX file whose outputs equal the simulated model's (ONNX
    Runtime runs its products on integer kernels); the file's metadata says how to feed it."""
    import json

    require_calibrated(quantized)
    spec = spec or spec_of(quantized)
    about = {"preprocessing": json.dumps(spec.preprocessing())}
    if spec.class_names:
        about["class_names"] = json.dumps(list(spec.class_names))
    return _export_onnx(quantized, quantized.psaq_quant_config, torch.zeros((1, *spec.input_size)), path, about,
                        config or ExportConfig())
