"""Models by name: psaq's own registry first (``digits-vit``), then any timm model name."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from psaq.data import DIGITS_SPEC, InputSpec, spec_from_timm
from psaq.errors import CheckpointError, ConfigError, UnknownNameError
from psaq.models.checkpoint import file_sha256, load_checkpoint
from psaq.registry import Registry


@dataclass
class ModelEntry:
    """A psaq-registered model: its factory, input spec and the dataset it was trained on."""

    factory: Callable[..., nn.Module]
    spec: InputSpec
    dataset: str
    # builds a checkpoint when the user gives none (the embedded default trains itself)
    default_checkpoint: Callable[..., Path] | None = None


MODELS: Registry[ModelEntry] = Registry("model")


def _register_builtin() -> None:
    from psaq.models.digits import cached_digits_checkpoint, digits_vit

    MODELS.register("digits-vit")(
        ModelEntry(digits_vit, DIGITS_SPEC, "digits", cached_digits_checkpoint)
    )


_register_builtin()


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and from where.

    ``name``: a psaq model (``digits-vit``) or any timm name. ``checkpoint``: a local
    safetensors or torch state-dict file. ``pretrained``: timm weights from its cache/hub.
    ``model_args``: timm keyword overrides (``img_size``, ``num_classes``, …).
    ``train_seed``: which self-trained digits-vit to use when no checkpoint is given.
    """

    name: str = "digits-vit"
    checkpoint: str | None = None
    pretrained: bool = False
    model_args: dict = field(default_factory=dict)
    train_seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"model name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.model_args, dict):
            raise ConfigError(f"model_args must be a mapping, got {type(self.model_args).__name__}")
        if not isinstance(self.train_seed, int) or self.train_seed < 0:
            raise ConfigError(f"train_seed must be a non-negative integer, got {self.train_seed!r}")


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    spec: InputSpec
    dataset: str  # "digits" or "imagenet": what evaluation and the `real` mode read by default
    checkpoint: Path | None
    checkpoint_sha256: str | None


def parse_model_args(pairs: list[str]) -> dict:
    """``["img_size=64", "drop_rate=0.1"]`` → ``{"img_size": 64, "drop_rate": 0.1}``; strings stay strings."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-arg expects key=value, got '{pair}'")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out[key.strip()] = value
    return out


def known_model_names() -> list[str]:
    import timm

    return MODELS.names() + timm.list_models()


def _create_timm(name: str, pretrained: bool, args: dict) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise UnknownNameError("model", name, known_model_names())
    try:
        return timm.create_model(name, pretrained=pretrained, **args)
    except TypeError as exc:
        raise ConfigError(f"timm model '{name}' rejected its arguments {args}: {exc}") from exc
    except (OSError, RuntimeError, ValueError) as exc:
        if pretrained:
            raise CheckpointError(
                f"could not load pretrained weights for '{name}' from the timm cache or hub "
                f"({type(exc).__name__}); pass a local file with --checkpoint"
            ) from exc
        raise ConfigError(f"timm could not build '{name}' with {args}: {exc}") from exc


def check_supported(model: nn.Module, name: str = "") -> None:
    """psaq hooks and quantizes timm's ViT/DeiT ``Attention`` and Swin ``WindowAttention``."""
    from psaq.synth.hooks import ATTENTION_TYPES

    if not any(isinstance(m, ATTENTION_TYPES) for m in model.modules()):
        raise ConfigError(
            f"model '{name or type(model).__name__}' ({type(model).__name__}) is not a supported vision transformer: "
            "psaq works on timm ViT, DeiT and Swin models (timm Attention / WindowAttention blocks)"
        )


def create_architecture(config: ModelConfig) -> nn.Module:
    """The model's architecture with fresh weights: no checkpoint, no download."""
    if config.name in MODELS:
        return MODELS.get(config.name).factory(**config.model_args)
    return _create_timm(config.name, False, config.model_args)


def load_model(
    config: ModelConfig,
    cache_dir: str | Path = ".psaq-cache",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> LoadedModel:
    """Build the model by name, load its weights, and return it in eval mode on ``device``."""
    checkpoint = Path(config.checkpoint) if config.checkpoint else None
    if config.name in MODELS:
        entry = MODELS.get(config.name)
        model = entry.factory(**config.model_args)
        spec, dataset = entry.spec, entry.dataset
        if checkpoint is None and entry.default_checkpoint is not None and not config.pretrained:
            checkpoint = entry.default_checkpoint(config.train_seed, Path(cache_dir), progress=progress)
    else:
        model = _create_timm(config.name, config.pretrained and checkpoint is None, config.model_args)
        spec, dataset = spec_from_timm(model), "imagenet"
    check_supported(model, config.name)
    sha = None
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
        sha = file_sha256(checkpoint)
    model.to(device=device, dtype=dtype).eval()
    return LoadedModel(config.name, model, spec, dataset, checkpoint, sha)
