"""The 2-block digits-vit that parity tests use, trained once per test run in the background.

    python -m tests.trained_digits OUT.safetensors
"""

import sys
from pathlib import Path

MODEL_ARGS = {"depth": 2}


def train(out: Path) -> None:
    from safetensors.torch import save_file

    from psaq.models.checkpoint import atomic_write
    from psaq.models.trainers import train_digits_vit
    from psaq.models.train import TrainConfig

    result = train_digits_vit(TrainConfig(seed=0, epochs=20, warmup_epochs=1, lr=3e-3), progress=False,
                              model_args=MODEL_ARGS)
    if result.test_top1 <= 80:  # the parity tests need a model that has learned something
        sys.exit(f"the trained digits-vit reached only {result.test_top1:.1f}% top-1")
    atomic_write(out, lambda tmp: save_file(result.model.state_dict(), str(tmp)))


if __name__ == "__main__":
    train(Path(sys.argv[1]))
