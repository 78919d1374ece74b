"""The official PSAQ-ViT synthesis loop (``generate_data`` of zkkli/PSAQ-ViT), timed on the CPU.

The official code is imported from a snapshot of its repository, never copied: a work tree, or
a bare git directory (as ``fetch github:zkkli/PSAQ-ViT`` leaves one), which is unpacked with
``git archive`` into a temporary folder. It calls ``.cuda()`` throughout, so while it runs,
``.cuda()`` and ``.to('cuda')`` are mapped to the CPU; its pretrained model is replaced by the
same architecture on seeded random weights (no hub here), built by its own ``build_model``.
Nothing else in its loop is touched: its model keeps ``requires_grad`` on every weight, its
estimator materialises the (B, N, N, d) cosine broadcast and the (B, grid, N²) kernel tensor.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import torch
from torch import nn

DEFAULT_SNAPSHOT = Path(__file__).resolve().parents[2] / ".mirror" / "zkkli+PSAQ-ViT" / "repo"


class _Done(Exception):
    pass


class _StepClock:
    """Stands in for the official loop's tqdm: hands out iterations, stamps the time at each,
    and stops the loop after ``steps`` + 1 of them (the first is a warm-up, not timed)."""

    def __init__(self, steps: int):
        self.steps, self.stamps = steps, []

    def __call__(self, iterable):
        self.iterable = iterable
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def set_description(self, *_args, **_kwargs) -> None:
        pass

    def __iter__(self):
        for item in self.iterable:
            self.stamps.append(time.perf_counter())
            if len(self.stamps) > self.steps + 1:
                raise _Done
            yield item

    def seconds_per_step(self) -> float:
        return (self.stamps[-1] - self.stamps[1]) / (len(self.stamps) - 2)


@contextlib.contextmanager
def _cuda_on_cpu():
    """``.cuda()`` and ``.to('cuda')`` stay on the CPU while the official loop runs."""
    saved = torch.Tensor.cuda, nn.Module.cuda, torch.Tensor.to

    def to(self, *args, **kwargs):
        args = tuple("cpu" if isinstance(a, str) and a.startswith("cuda") else a for a in args)
        return saved[2](self, *args, **kwargs)

    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.to = to
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda, torch.Tensor.to = saved


def _accept_new_keywords(model: nn.Module) -> nn.Module:
    """The official attention forwards take ``x`` (and Swin's ``mask``) only; today's timm blocks
    also pass ``attn_mask``/``is_causal`` (None/False for these models). Those two are dropped
    on the way in; the computation is the official one."""
    for module in model.modules():
        official = module.__dict__.get("forward")  # set per instance by the official build_model
        if official is not None and hasattr(module, "matmul2"):
            def forward(x, *args, attn_mask=None, is_causal=False, _official=official, **kwargs):
                if attn_mask is not None or is_causal:
                    raise RuntimeError("the official attention forward has no attention mask")
                return _official(x, *args, **kwargs)
            module.forward = forward
    return model


@contextlib.contextmanager
def official_tree(snapshot: Path):
    """A directory holding the official code's files: the snapshot itself, or its HEAD unpacked."""
    snapshot = Path(snapshot)
    if (snapshot / "generate_data.py").is_file():
        yield snapshot
        return
    if not (snapshot / "HEAD").is_file():
        raise SystemExit(f"{snapshot} is neither a PSAQ-ViT work tree nor a git directory of it "
                         "(fetch github:zkkli/PSAQ-ViT, or pass --official DIR)")
    with tempfile.TemporaryDirectory(prefix="psaq-official-") as tmp:
        archive = subprocess.run(["git", f"--git-dir={snapshot}", "archive", "HEAD"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        yield Path(tmp)


def official_step_seconds(snapshot: Path, model: str = "deit_tiny", batch: int = 32, steps: int = 2,
                          seed: int = 0) -> float:
    """Seconds per step of the official loop (median-free: ``steps`` consecutive steps after one
    warm-up step), on the CPU with torch's current thread count."""
    with official_tree(snapshot) as tree:
        sys.path.insert(0, str(tree))
        try:
            generate_data = importlib.import_module("generate_data")
            build = generate_data.build_model

            def seeded_random_model(name, Pretrained=True):  # the official signature
                torch.manual_seed(seed)
                return _accept_new_keywords(build(name, Pretrained=False))

            clock = _StepClock(steps)
            generate_data.build_model, generate_data.tqdm = seeded_random_model, clock
            with _cuda_on_cpu():
                try:
                    generate_data.generate_data(Namespace(model=model, calib_batchsize=batch))
                except _Done:
                    pass
            return clock.seconds_per_step()
        finally:
            sys.path.remove(str(tree))
            for name in [m for m in sys.modules if m in ("generate_data", "utils", "models")
                         or m.startswith(("utils.", "models."))]:
                del sys.modules[name]
