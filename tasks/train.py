"""Stage 1, load model: train the embedded digits-vit, or name the user's checkpoint."""

from __future__ import annotations

import dataclasses

from prefect import task

from psaq.models import save_checkpoint
from psaq.models.digits import TrainConfig, train_digits_vit
from tasks.artifacts import Artifact, publish, stage_cache_policy


@task(name="train-digits-vit", cache_policy=stage_cache_policy(), persist_result=True)
def train_model(train: dict, out: str, code: str) -> Artifact:
    """Train digits-vit with ``train`` (a TrainConfig as a dict) and save it to ``out``."""
    cfg = TrainConfig(**train)

    def write(tmp):
        result = train_digits_vit(cfg, device="cpu", progress=True)
        save_checkpoint(result.model, tmp, {"test_top1": f"{result.test_top1:.2f}",
                                            "train_config": str(dataclasses.asdict(cfg)), "wall_s": f"{result.wall_s:.1f}"})

    return publish(out, write)


def user_checkpoint(model: dict) -> Artifact | None:
    """A checkpoint the user named, hashed now so a changed file is a new cache key downstream."""
    from pathlib import Path

    from psaq.errors import CheckpointError

    if not model.get("checkpoint"):
        return None
    path = Path(model["checkpoint"]).expanduser().resolve()
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    return Artifact.of(path)
