"""Shared by the stage tasks: rebuild the model a stage works on from its config and checkpoint."""

from __future__ import annotations

from psaq.device import resolve_device
from psaq.models import LoadedModel, ModelConfig, load_model
from tasks.artifacts import Artifact
from tasks.settings import project_root


def load_stage_model(model: dict, checkpoint: Artifact | None, runtime: dict) -> tuple[LoadedModel, object]:
    if runtime.get("threads"):
        import torch

        torch.set_num_threads(runtime["threads"])
    device = resolve_device(runtime.get("device", "auto"))
    cfg = ModelConfig(**{**model, "checkpoint": checkpoint.verify().as_posix() if checkpoint else model.get("checkpoint")})
    return load_model(cfg, cache_dir=project_root() / "models", device=device, progress=False), device
