"""Forward hooks that capture softmax(q·kᵀ)·v of every attention module.

They hook the *input* of the attention's output projection, which is exactly
softmax(q·kᵀ)·v with the heads concatenated, on timm's fused (scaled_dot_product_attention)
path and on its explicit path alike, so synthesis never forces the slow path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from psaq.errors import ConfigError
from psaq.families import family_of


@dataclass
class Captured:
    name: str
    num_heads: int
    output: torch.Tensor  # (rows, tokens, channels): rows are images, or images × windows for Swin


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The family's attention modules (``Family.attention_types``). One that normalizes before its
    ``proj`` (timm's scale_norm) is refused: its proj input is no longer softmax(q·kᵀ)·v."""
    try:
        types = family_of(model).attention_types
    except ConfigError as exc:
        raise ConfigError(f"{type(model).__name__} has no timm attention modules to hook that psaq knows: {exc}") from None
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, types)]
    for name, m in found:
        if not isinstance(getattr(m, "norm", nn.Identity()), nn.Identity):
            raise ValueError(f"{name}: attention with scale_norm is not supported (proj input is normalized)")
    return found


class AttentionOutputHooks:
    """Context manager: ``captured`` holds one entry per attention module after a forward."""

    def __init__(self, model: nn.Module):
        self.modules = attention_modules(model)
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no timm attention modules to hook")
        self.captured: list[Captured] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str, module: nn.Module):
        def capture(_proj: nn.Module, args: tuple) -> None:
            self.captured.append(Captured(name, module.num_heads, args[0]))

        return capture

    def __enter__(self) -> AttentionOutputHooks:
        for name, module in self.modules:
            self._handles.append(module.proj.register_forward_pre_hook(self._hook(name, module)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.captured.clear()

    def take(self) -> list[Captured]:
        out, self.captured = self.captured, []
        return out
