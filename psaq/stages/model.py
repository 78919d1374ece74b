"""Stage ``model``: the weights a run quantizes, and their content hash.

psaq's own models (``digits-vit``) are trained here, once per training config and seed, into
the store. A user's checkpoint is hashed where it lies; timm's cached weights and, on
purpose only, a random initialization are hashed after loading.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from psaq.models import LoadedModel, ModelConfig, create_architecture, load_model, save_checkpoint
from psaq.models.loader import check_supported
from psaq.models.shipped import shipped_weights
from psaq.models.train import TrainConfig
from psaq.models.trainers import TRAINERS
from psaq.stages.stage import Stage
from psaq.stages.common import Weights, artifact_path, dataset_code, family_name, load as load_weights, state_sha256
from psaq.store import Store

TRAINING_LOG = ".training.json"  # beside a trained model: wall time, test top-1, losses


STAGE = Stage("model", __name__, ("model", "train"), (), ("train_seed",), ("pipeline/models/m{train_seed}.json",),
              "models", "weights")


def reads_outside(model: ModelConfig) -> str | None:
    """The weights' source outside the project, which DVC cannot see change (the stage hashes it
    itself, so DVC runs it on every repro); None where the code fixes the weights: psaq's own
    training on a pinned dataset, or a seeded random init."""
    if model.checkpoint:
        return f"the checkpoint {model.checkpoint}"
    if model.name in TRAINERS and not model.random_weights:
        return None
    return f"timm's cached weights for {model.name}" if model.pretrained else None


def run(store: Store, model: ModelConfig, train: TrainConfig, progress: bool = True) -> tuple[Weights, bool]:
    """(weights, built): built is True when this call trained the model. A psaq model with
    ``pretrained`` takes the weights psaq ships instead of training."""
    if model.checkpoint:
        path = Path(model.checkpoint).expanduser().resolve()
        loaded = load_model(dataclasses.replace(model, checkpoint=str(path)))  # refuses a bad file now
        # the hash of the bytes loaded
        return Weights("checkpoint", loaded.checkpoint_sha256, str(path), family_name(loaded.model), loaded.spec.headless), False
    if model.pretrained and model.name in TRAINERS:  # the weights psaq ships for its own model, checked by hash
        path = shipped_weights(model.name, model.train_seed, model.model_args)
        loaded = load_model(dataclasses.replace(model, checkpoint=str(path)))
        # identity by tensors, as a model trained here: the same recipe's tensors key the same results
        return Weights("shipped", state_sha256(loaded.model), str(path), family_name(loaded.model), loaded.spec.headless), False
    trainer = TRAINERS.get(model.name) if model.name in TRAINERS else None
    if trainer is not None and not model.random_weights:
        check_supported(create_architecture(model), model.name)  # refuse bad model_args before training
        cfg = dataclasses.replace(train, seed=model.train_seed).resolved(trainer.defaults)
        out = artifact_path(store, STAGE, f"{model.name}-m{model.train_seed}", ".safetensors",
                            model.name, model.model_args, dataclasses.asdict(cfg), dataset_code(model))

        def write(tmp: Path) -> None:
            result, metadata = trainer.train(cfg, model.model_args, progress)
            save_checkpoint(result.model, tmp, metadata)
            # how long training took: kept beside the model, not in it (the file's bytes stay the same per seed)
            Path(out + TRAINING_LOG).write_text(json.dumps({"wall_s": result.wall_s, "test_top1": result.test_top1,
                                                            "epoch_losses": result.losses, "config": metadata}))

        artifact, built = store.publish(out, write)
        # identity by tensors: safetensors writes its metadata in no fixed order, so equal weights can
        # differ in file bytes (the store still verifies the file's bytes before every reuse)
        loaded = load_model(dataclasses.replace(model, checkpoint=artifact.path))
        return Weights("trained", state_sha256(loaded.model), artifact.path, family_name(loaded.model), loaded.spec.headless), built
    loaded = load_model(model)  # timm's cache, or a seeded random init; refuses no weights
    return Weights("pretrained" if model.pretrained else "random", state_sha256(loaded.model), None,
                   family_name(loaded.model), loaded.spec.headless), False


def load(store: Store | str, model: ModelConfig, device: str | torch.device = "cpu", progress: bool = True,
         train: TrainConfig = TrainConfig()) -> LoadedModel:
    """The model with the weights this stage gives it (psaq's own models trained once into
    ``store``), as the stages after it load it."""
    weights, _ = run(store if isinstance(store, Store) else Store(store), model, train, progress)
    return load_weights(model, weights, device)
