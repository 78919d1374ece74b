"""Speed options of the synthesis loop: autocast precision, torch.compile targets, CUDA graphs.

Each option is a name in ``SynthesisConfig`` so that it is part of the cached stage's inputs:
they all change the floating-point results a little. Measured one by one in
``benchmarks/synthesis_speed.py`` (figures in the README).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from torch import nn

from psaq.errors import CompileError, ConfigError
from psaq.registry import Registry
from psaq.synth.kde import fused_kde_entropy, kde_entropy

# autocast dtype of the model's forward; similarities and the KDE always run in float32
PRECISIONS: Registry[torch.dtype | None] = Registry("synthesis precision")
PRECISIONS.register("fp32")(None)
PRECISIONS.register("bf16")(torch.bfloat16)

# what torch.compile wraps: the KDE is the costly elementwise part (a (rows, grid, pairs) tensor
# in eager mode), the model is mostly matrix products that eager mode already runs well
COMPILE_TARGETS: Registry[frozenset[str]] = Registry("compile target")
COMPILE_TARGETS.register("none")(frozenset())
COMPILE_TARGETS.register("kde")(frozenset({"kde"}))
COMPILE_TARGETS.register("model")(frozenset({"model"}))
COMPILE_TARGETS.register("all")(frozenset({"kde", "model"}))

# Dynamo's compilation is not safe to run from two threads at once (the pipeline synthesizes
# grid points in threads), so the first step of a compiled loop holds this lock.
COMPILE_LOCK = threading.Lock()


def autocast(precision: str, device: torch.device):
    dtype = PRECISIONS.get(precision)
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def check_device_options(config, device: torch.device) -> None:
    """Options that only make sense on some devices are refused with the reason."""
    if config.cuda_graphs and device.type != "cuda":
        raise ConfigError(f"cuda_graphs needs a CUDA device, but synthesis runs on {device}")


class Compiled:
    """The model forward and the KDE entropy function, compiled as the config asks."""

    def __init__(self, model: nn.Module, config, device: torch.device):
        check_device_options(config, device)
        targets = COMPILE_TARGETS.get(config.compile)
        # CUDA graphs replay the fixed-shape kernels of a compiled region without relaunching them
        mode = "reduce-overhead" if config.cuda_graphs else None
        self.active = bool(targets)
        self.model: Callable = torch.compile(model, mode=mode) if "model" in targets else model
        # compiled: the composed formula, which inductor fuses; eager: the hand-fused one
        self.kde: Callable = torch.compile(kde_entropy, mode=mode, dynamic=False) if "kde" in targets else fused_kde_entropy

    @contextmanager
    def first_step(self, step: int) -> Iterator[None]:
        """Compilation happens in the first step: hold the lock, and turn a compiler failure
        (no C++ compiler for inductor on a CPU, no triton on a GPU, …) into one line with the way out."""
        if not (self.active and step == 0):
            yield
            return
        from torch._dynamo.exc import TorchDynamoException

        with COMPILE_LOCK:
            try:
                yield
            except TorchDynamoException as exc:
                reason = str(exc).strip().splitlines()[-1][:300]
                raise CompileError(f"torch.compile failed ({reason}); set compile: none, or install what it "
                                   "needs (a C++ compiler on a CPU, triton on a GPU)") from exc
