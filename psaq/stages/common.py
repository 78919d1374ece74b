"""What every stage shares: the model's identity in keys, loading it from its weights, devices."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from psaq.device import resolve_device
from psaq.errors import ArtifactError
from psaq.codehash import PACKAGES, code_hash, source_hash
from psaq.models import MODELS, LoadedModel, ModelConfig, load_model
from psaq.store import Store, stable_hash


@dataclass(frozen=True)
class Weights:
    """Where a model's weights come from, and their content hash: the model's identity in every key."""

    source: str  # trained | shipped | checkpoint | pretrained | random
    sha256: str  # a user's checkpoint: the file's hash; otherwise the tensors' (``state_sha256``)
    path: str | None = None
    family: str | None = None  # the model's family (``psaq.families``); None where none registered fits
    headless: bool = False  # no classifier: scored by k-NN over its features (``psaq.feature_evaluation``)


def family_name(model: nn.Module) -> str | None:
    from psaq.errors import ConfigError
    from psaq.families import family_of

    try:
        return family_of(model).name
    except ConfigError:
        return None  # a float model psaq cannot quantize: the stages that quantize say so


def dataset_code(model: ModelConfig) -> dict:
    """The code of the built-in dataset a psaq model is trained on and takes its input spec from."""
    dataset = MODELS.get(model.name).dataset if model.name in MODELS else None
    if dataset is None:
        return {}
    importlib.import_module("psaq.datasets.builtin")  # by name: no dataset file is in this module's key
    from psaq.datasets import DATASETS

    return {"dataset": code_hash(DATASETS.get(dataset).module)}


def plugin_code(model: ModelConfig, weights: Weights) -> dict:
    """The code of the plug-ins this model's results run: its family's file and its built-in
    dataset's file (the stages' own code hashes leave plug-ins out, ``psaq.codehash``)."""
    from psaq.families import FAMILIES, families

    code = dataset_code(model)
    if weights.family is not None:
        list(families())  # the built-in families registered
        code["family"] = module_code(FAMILIES.get(weights.family).module)
    return code


def module_code(module: str) -> str:
    """A psaq module's code hash; a family a user registered from a module of their own is keyed
    by that module's file, so an edit there re-keys its results too."""
    if module.split(".")[0] in PACKAGES:
        return code_hash(module)
    import inspect
    import sys

    path = inspect.getsourcefile(sys.modules[module]) if module in sys.modules else None
    return source_hash(path) if path else f"unhashable module {module}"


def state_sha256(model: nn.Module) -> str:
    """Content hash of a model's tensors (weights loaded from timm's cache or a random init)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(np.ascontiguousarray(t.detach().cpu().float().numpy()).tobytes())
    return h.hexdigest()


def identity(model: ModelConfig, weights: Weights) -> dict:
    """What a stage's output depends on about the model: architecture, weight content, and the
    code of its family and dataset."""
    return {"name": model.name, "model_args": model.model_args, "weights": weights.sha256,
            **({"headless": True} if weights.headless else {}), **plugin_code(model, weights)}


def device_kind(device: str | torch.device | None) -> str:
    """Results differ between device types (kernels round differently), not between thread counts."""
    return resolve_device(device).type


def load(model: ModelConfig, weights: Weights, device: str | torch.device = "cpu") -> LoadedModel:
    """The model with exactly the weights its key names; refuses weights that changed since."""
    cfg = dataclasses.replace(model, checkpoint=weights.path) if weights.path else model
    loaded = load_model(cfg, device=device)
    actual = loaded.checkpoint_sha256 if weights.source == "checkpoint" else state_sha256(loaded.model)
    if actual != weights.sha256:
        raise ArtifactError(f"the weights of '{model.name}' ({weights.path or weights.source}) changed since this run "
                            "hashed them; rerun")
    return loaded


def artifact_path(store: Store, stage, stem: str, suffix: str, *parts) -> str:
    """``<store>/<stage folder>/<stem>-<key><suffix>``; the key hashes the stage, its code and ``parts``."""
    return str(store.path(stage.folder, stem, stable_hash(stage.name, stage.code, *parts), suffix))
