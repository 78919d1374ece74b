"""The synthesis loop never waits for the device inside a step: the loss terms stay on the device
and are read back in blocks of ``SYNC_EVERY`` steps. On a GPU each read (``.item()``, ``.cpu()``,
``.tolist()``, a tensor's truth value …) stalls the queue of kernels; on the CPU the same calls are
counted here, so a read added to the step (a loss printed, a finiteness check per step) fails."""

import sys
import weakref
from collections import Counter

import pytest
import torch
from torch.overrides import TorchFunctionMode

from psaq.synth import SynthesisConfig, synthesize
from psaq.synth.optimize import SYNC_EVERY
from tests.tiny import TINY_SPEC, tiny_swin, tiny_vit

# what makes the host wait for the device: reading values or a value-dependent shape back
READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__bool__,
         torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.nonzero, torch.nonzero,
         torch.Tensor.any, torch.Tensor.all, torch.is_nonzero, torch.Tensor.unique, torch.unique,
         torch.masked_select, torch.Tensor.masked_select}


# draws from a CPU generator (the jitter offset, the flip) are host values already: reading them
# waits for nothing, on any device
DRAWS = {torch.randint, torch.rand, torch.randn, torch.randperm}


def _in_optimizer() -> bool:
    """Adam reads its step counter, a host tensor unless ``capturable`` (torch keeps it off the GPU
    for exactly this reason): not a wait for the device."""
    frame = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return False
        if "/torch/optim/" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


class CountReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.reads: Counter = Counter()
        self.host_draws: dict[int, weakref.ref] = {}  # by identity: a tensor's == is elementwise

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        generator = kwargs.get("generator")
        if func in DRAWS and generator is not None and generator.device.type == "cpu":
            self.host_draws[id(out)] = weakref.ref(out)
        elif func in READS and not self._drawn(args[0] if args else None) and not _in_optimizer():
            self.reads[getattr(func, "__name__", str(func))] += 1
        return out

    def _drawn(self, t) -> bool:
        ref = self.host_draws.get(id(t))
        return ref is not None and ref() is t


def reads_for(model, steps: int, method: str) -> Counter:
    cfg = SynthesisConfig(method=method, num_samples=4, rounds=1, steps_per_round=steps, warmup_steps=1)
    with CountReads() as mode:
        synthesize(model, cfg, TINY_SPEC, "cpu", progress=False)
    return mode.reads


@pytest.mark.parametrize("method", ["psaq", "psaq-noent"])
@pytest.mark.parametrize("make", [tiny_vit, tiny_swin], ids=["vit", "swin"])
def test_the_step_reads_nothing_back_only_each_block_of_steps_does(make, method):
    torch.manual_seed(0)
    model = make().eval()
    n = [reads_for(model, SYNC_EVERY * k, method) for k in (1, 2, 3)]
    per_block = [sum((n[i + 1] - n[i]).values()) for i in range(2)]
    # each further block of SYNC_EVERY steps adds the same few reads (the block's copy to the host
    # and its finiteness check), not one per step
    assert per_block[0] == per_block[1] and 0 < per_block[0] < SYNC_EVERY, (per_block, n)


def test_the_counter_sees_a_read_in_the_step(monkeypatch):
    """The counter can fail: a per-step `.item()` in the loss makes each block cost SYNC_EVERY more."""
    import psaq.synth.optimize as optimize

    total_variation = optimize.total_variation

    def reading(x):
        tv = total_variation(x)
        tv.item()  # what a per-step log line would do
        return tv

    monkeypatch.setattr(optimize, "total_variation", reading)
    torch.manual_seed(0)
    model = tiny_vit().eval()
    n = [reads_for(model, SYNC_EVERY * k, "psaq-noent") for k in (1, 2)]
    assert sum((n[1] - n[0]).values()) >= SYNC_EVERY
