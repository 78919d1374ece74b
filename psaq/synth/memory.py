"""Refuse a synthesis that cannot fit before allocating it: past the memory there is, Linux
lets the allocation through and later kills the process without a word."""

from __future__ import annotations

import math

import torch

from psaq.errors import ConfigError

# image-sized float32 tensors alive during a step: the images, their gradient, Adam's two
# moments, the jittered batch, its gradient, the total variation's gradient, the clamp's result
IMAGE_COPIES = 8


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can have: free GPU memory, or Linux's MemAvailable; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(config, spec, device: torch.device) -> None:
    """The image-sized tensors alone (the model's activations come on top) must fit."""
    need = IMAGE_COPIES * config.num_samples * math.prod(spec.input_size) * 4
    have = available_bytes(device)
    if have is not None and need > have:
        raise ConfigError(f"num_samples {config.num_samples} of {'x'.join(map(str, spec.input_size))} images needs at "
                          f"least {need / 2**30:.1f} GiB on {device} for the images and their optimizer state alone, "
                          f"and {have / 2**30:.1f} GiB is available; lower num_samples")
