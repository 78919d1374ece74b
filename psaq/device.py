"""Device resolution: refuse a device that is not there instead of failing deep inside torch."""

from __future__ import annotations

import torch

from psaq.errors import DeviceError

SUPPORTED = ("cpu", "cuda", "mps")  # devices that hold real tensors (not meta, not lazy backends)


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``None`` or ``"auto"`` picks CUDA when present, else the CPU."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"'{name}' is not a device name (try cpu, cuda, cuda:0)") from exc
    if device.type not in SUPPORTED:
        raise DeviceError(f"device '{name}' cannot run psaq's stages; use cpu, cuda, cuda:N or mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{name}' was asked for, but this machine has no CUDA GPU; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device '{name}' was asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' was asked for, but MPS is not available here")
    return device
