"""The stages of one quantization run as plain functions: data → synthesize → calibrate → evaluate.

The command line and the benchmark call ``quantize_model``; the Prefect tasks call the
stage functions one by one so each can be cached on its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from psaq.data import digits_split, first_images, image_folder, loader
from psaq.evaluate import EvalConfig, EvalResult, evaluate
from psaq.models import LoadedModel
from psaq.quant import QuantConfig, calibrate, quantize_
from psaq.synth import SynthesisConfig, SynthesisResult, synthesize
from psaq.synth.methods import RealSource


def eval_loader(loaded: LoadedModel, dataset: str | None, batch_size: int = 128) -> DataLoader:
    """``dataset``: ``digits``, an ImageNet-style folder, or None for the model's own default."""
    name = dataset or loaded.dataset
    if name == "digits":
        return loader(digits_split("test"), batch_size)
    if name == "imagenet":
        from psaq.errors import DatasetError

        raise DatasetError(f"model '{loaded.name}' evaluates on ImageNet: pass --dataset PATH to a val/ folder")
    return loader(image_folder(name, loaded.model), batch_size)


def real_source(loaded: LoadedModel, dataset: str | None) -> RealSource | None:
    """Where the `real` baseline draws its images: the digits train split, or the given folder."""
    name = dataset or loaded.dataset
    if name == "imagenet":
        return None
    # built on call, so the other modes never load or scan the training images
    if name == "digits":
        return lambda n, seed: first_images(digits_split("train"), n, seed)
    return lambda n, seed: first_images(image_folder(name, loaded.model), n, seed)


def quantized_copy(model: nn.Module, config: QuantConfig, images: torch.Tensor, device, batch_size: int = 64) -> nn.Module:
    """A calibrated fake-quantized copy; the float model is left untouched."""
    qmodel = quantize_(copy.deepcopy(model), config)
    return calibrate(qmodel, images, batch_size=batch_size, device=device)


@dataclass
class RunResult:
    fp32: EvalResult
    quantized: EvalResult
    samples: SynthesisResult
    quant_config: QuantConfig
    synth_config: SynthesisConfig
    model: nn.Module  # the calibrated fake-quantized copy


def quantize_model(
    loaded: LoadedModel,
    quant: QuantConfig,
    synth: SynthesisConfig,
    device: torch.device,
    dataset: str | None = None,
    eval_config: EvalConfig = EvalConfig(),
    progress: bool = True,
    fp32: EvalResult | None = None,
) -> RunResult:
    data = eval_loader(loaded, dataset, eval_config.batch_size)
    if fp32 is None:
        fp32 = evaluate(loaded.model, data, device, limit=eval_config.limit, progress=progress)
    samples = synthesize(loaded.model, synth, loaded.spec, device, real_source(loaded, dataset), progress)
    qmodel = quantized_copy(loaded.model, quant, samples.images, device)
    qres = evaluate(qmodel, data, device, fp32.predictions, eval_config.limit, progress)
    return RunResult(fp32, qres, samples, quant, synth, qmodel)
