"""Models by name, psaq's own first (``digits-vit``), then any timm model name; and ``load_model``,
which builds one and loads its weights knowing no store and no stage (training psaq's own models
on demand is the model stage's job)."""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from psaq.data import spec_from_timm
from psaq.datasets.digits import DIGITS_SPEC
from psaq.datasets.fashion_mnist import FASHION_SPEC
from psaq.input_spec import InputSpec
from psaq.errors import CheckpointError, ConfigError, UnknownNameError, check_seed
from psaq.models.digits import digits_vit
from psaq.models.fashion import ARCHITECTURES as FASHION_ARCHITECTURES
from psaq.models.checkpoint import checkpoint_class_names, load_checkpoint, read_checkpoint
from psaq.models.shipped import shipped_seeds, shipped_weights
from psaq.registry import Registry



@dataclass
class ModelEntry:
    """A psaq-registered model: its factory, input spec and the built-in dataset it is trained on
    (by ``psaq.models.trainers``, which the model stage runs when no checkpoint is given)."""

    factory: Callable[..., nn.Module]
    spec: InputSpec
    dataset: str | None


MODELS: Registry[ModelEntry] = Registry("model")


MODELS.register("digits-vit")(ModelEntry(digits_vit, DIGITS_SPEC, "digits"))
for _name, _factory in FASHION_ARCHITECTURES.items():
    MODELS.register(_name)(ModelEntry(_factory, FASHION_SPEC, "fashion-mnist"))


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load and from where.

    ``name``: a psaq model (``digits-vit``) or any timm name. ``checkpoint``: a local
    safetensors or torch state-dict file. ``pretrained``: timm weights from its cache/hub; for
    psaq's own models, the trained weights psaq ships (``psaq.models.shipped``).
    ``model_args``: timm keyword overrides (``img_size``, ``num_classes``, …).
    ``train_seed``: which self-trained digits-vit to use when no checkpoint is given.
    ``random_weights``: run a timm model on its random initial weights, on purpose (tests,
    speed measurements); without it a timm model with no weights is refused.
    ``headless``: the backbone alone: the classifier is removed once the weights are loaded (a
    checkpoint with a head loads as it is); the model outputs its pooled features. A model built
    with ``num_classes=0`` is headless already.
    """

    name: str = "digits-vit"
    checkpoint: str | None = None
    pretrained: bool = False
    model_args: dict = field(default_factory=dict)
    train_seed: int = 0
    random_weights: bool = False
    headless: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"model name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.model_args, dict):
            raise ConfigError(f"model_args must be a mapping, got {type(self.model_args).__name__}")
        check_seed("train_seed", self.train_seed)
        for flag in ("pretrained", "random_weights", "headless"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            raise ConfigError(f"checkpoint must be a path, got {self.checkpoint!r}")
        if self.random_weights and (self.checkpoint or self.pretrained):
            raise ConfigError("random_weights contradicts checkpoint/pretrained: choose one source of weights")


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    spec: InputSpec
    dataset: str | None  # the built-in dataset it evaluates on by default; None: the user must name one
    checkpoint: Path | None
    checkpoint_sha256: str | None


def parse_model_args(pairs: list[str]) -> dict:
    """``["img_size=64", "drop_rate=0.1", "qkv_bias=false"]`` → ``{"img_size": 64, "drop_rate": 0.1,
    "qkv_bias": False}``: each value read as Python's literal (``(2, 2)``, ``True``) or else as
    YAML reads it, as params.yaml's ``model_args`` are (``false``, ``null``, ``[2, 2]``); strings stay
    strings."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--model-arg expects key=value, got '{pair}'")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            if isinstance(value, (dict, set)) or value is None and raw.strip() not in ("null", "~", "Null", "NULL"):
                value = raw  # "a: b" is no mapping a flag means; an empty value is the text itself
        out[key.strip()] = value
    return out


def known_model_names() -> list[str]:
    import timm

    return MODELS.names() + timm.list_models()


def require_known(name: str) -> None:
    """An unknown model name is refused with close names (psaq's and timm's), before any work."""
    import timm

    if name not in MODELS and not timm.is_model(name):
        raise UnknownNameError("model", name, known_model_names())


def _create_timm(name: str, pretrained: bool, args: dict) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise UnknownNameError("model", name, known_model_names())
    try:
        return timm.create_model(name, pretrained=pretrained, **args)
    except TypeError as exc:
        raise ConfigError(f"timm model '{name}' rejected its arguments {args}: {_first_line(exc)}") from exc
    except Exception as exc:  # timm raises anything from a bad argument value
        if pretrained and isinstance(exc, (OSError, RuntimeError, ValueError)):
            raise CheckpointError(
                f"could not load pretrained weights for '{name}' from the timm cache or hub "
                f"({type(exc).__name__}); pass a local file with --checkpoint"
            ) from exc
        raise ConfigError(f"timm could not build '{name}' with {args}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _is_attention(module: nn.Module) -> bool:
    # what synthesis hooks in every family: a module with heads whose ``proj`` reads softmax(q·kᵀ)·v
    return hasattr(module, "num_heads") and isinstance(getattr(module, "proj", None), nn.Linear)


def check_supported(model: nn.Module, name: str = "") -> None:
    """A model without attention modules is refused when it is loaded. Whether psaq knows its
    family (``psaq.families``) is asked where it is quantized or synthesized for: loading a model
    needs no family, so the model stage's code holds none."""
    if not any(_is_attention(m) for m in model.modules()):
        raise ConfigError(
            f"model '{name or type(model).__name__}' ({type(model).__name__}) is not a supported vision transformer: "
            "psaq works on timm ViT, DeiT and Swin models (timm Attention / WindowAttention blocks)"
        )


def create_architecture(config: ModelConfig) -> nn.Module:
    """The model's architecture with fresh weights: no checkpoint, no download."""
    if config.name in MODELS:
        try:
            return MODELS.get(config.name).factory(**config.model_args)
        except Exception as exc:
            raise ConfigError(f"model '{config.name}' rejected its arguments {config.model_args}: "
                              f"{type(exc).__name__}: {_first_line(exc)}") from exc
    return _create_timm(config.name, False, config.model_args)


def check_finite_weights(model: nn.Module, source: str) -> None:
    """A NaN or Inf weight makes every output meaningless while top-1 still prints."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{source} holds NaN or Inf values in {len(bad)} tensor(s), e.g. {bad[0]}")


def load_model(config: ModelConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Build the model by name, load its weights, and return it in eval mode on ``device``.

    Weights come from ``config.checkpoint``, timm's cache (``pretrained``), or, only when asked
    for, a random initialization seeded by ``train_seed``. psaq's own models take the checkpoint
    their trainer wrote: ``psaq.stages.model.load`` trains it once into the store and loads it."""
    checkpoint = Path(config.checkpoint) if config.checkpoint else None
    if config.name in MODELS:
        entry = MODELS.get(config.name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.train_seed)
            model = create_architecture(config)
        spec, dataset = entry.spec, entry.dataset
        if checkpoint is None and config.pretrained:
            checkpoint = shipped_weights(config.name, config.train_seed, config.model_args)
        if checkpoint is None and not config.random_weights:
            shipped = shipped_seeds(config.name)
            also = f", or pretrained=True for the weights psaq ships (train seed {shipped[0]})" if shipped else ""
            raise ConfigError(f"'{config.name}' is trained by psaq: load it through the model stage "
                              f"(psaq.stages.model.load, which trains it once into the store), or pass its checkpoint{also}")
    else:
        if not (checkpoint or config.pretrained or config.random_weights):
            check_supported(_create_timm(config.name, False, config.model_args), config.name)
            raise ConfigError(f"model '{config.name}' has no weights: pass --checkpoint FILE (or model.checkpoint) or "
                              "--pretrained for timm's cached weights; --random-weights runs its random init on purpose")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.train_seed)  # a random init, when asked for, is the same every time
            model = _create_timm(config.name, config.pretrained and checkpoint is None, config.model_args)
        spec, dataset = spec_from_timm(model, config.name), None
    check_supported(model, config.name)
    sha = None
    if checkpoint is not None:
        content = read_checkpoint(checkpoint)  # one read: the hash is of the bytes loaded
        load_checkpoint(model, checkpoint, content)
        sha = content.sha256
        names = checkpoint_class_names(checkpoint, content.metadata)
        if names is not None:
            if len(names) != spec.num_classes:
                raise CheckpointError(f"checkpoint '{checkpoint}' names {len(names)} classes but the model has "
                                      f"{spec.num_classes} outputs")
            spec = dataclasses.replace(spec, class_names=tuple(names))
    if not config.random_weights:
        check_finite_weights(model, f"checkpoint '{checkpoint}'" if checkpoint else f"the weights of '{config.name}'")
    if config.headless and spec.num_classes:
        model.reset_classifier(0)
        spec = dataclasses.replace(spec, num_classes=0, class_names=None)
    model.to(device=device, dtype=dtype).eval()
    # the spec travels with the model (and its copies), so psaq.input_spec(model) needs no guess
    # from timm's config, which knows nothing of psaq's models' normalization
    model.psaq_input_spec = spec
    return LoadedModel(config.name, model, spec, dataset, checkpoint, sha)
