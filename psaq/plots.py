"""Figures for reports: sample grids, patch-similarity histograms, accuracy against bit width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from psaq.data import InputSpec  # noqa: E402
from psaq.models.checkpoint import atomic_write  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return out


def sample_grid(sets: Mapping[str, torch.Tensor], spec: InputSpec, path: str | Path, per_row: int = 8) -> Path:
    """One row of images per named set, shown as pixels (normalization undone)."""
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    fig, axes = plt.subplots(len(sets), per_row, figsize=(per_row * 1.1, len(sets) * 1.25), squeeze=False)
    for r, (name, images) in enumerate(sets.items()):
        pixels = (images[:per_row] * std + mean).clamp(0, 1)
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(pixels):
                ax.imshow(pixels[c].permute(1, 2, 0).numpy())
        axes[r][0].set_title(name, fontsize=8, loc="left")
    return _save(fig, path)


def similarity_histograms(sims: Mapping[str, Sequence[torch.Tensor]], path: str | Path, blocks: Sequence[int] | None = None) -> Path:
    """The paper's key figure: patch-similarity distributions of real, noise and synthesized images."""
    n_blocks = len(next(iter(sims.values())))
    blocks = list(blocks) if blocks is not None else sorted({0, n_blocks // 2, n_blocks - 1})
    fig, axes = plt.subplots(1, len(blocks), figsize=(4 * len(blocks), 3), squeeze=False)
    for ax, b in zip(axes[0], blocks):
        for name, per_block in sims.items():
            ax.hist(per_block[b].numpy(), bins=60, range=(-1, 1), density=True, histtype="step", label=name)
        ax.set_title(f"block {b}")
        ax.set_xlabel("patch cosine similarity")
    axes[0][0].set_ylabel("density")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def accuracy_vs_bits(rows: Mapping[str, Mapping[str, tuple[float, float]]], columns: Sequence[str], path: str | Path,
                     fp32: float | None = None) -> Path:
    """Top-1 (mean ± std) per calibration mode across bit settings."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = list(range(len(columns)))
    for name, cells in rows.items():
        means = [cells.get(c, (float("nan"), 0))[0] for c in columns]
        stds = [cells.get(c, (float("nan"), 0))[1] for c in columns]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
    if fp32 is not None:
        ax.axhline(fp32, color="gray", linestyle="--", label="FP32")
    ax.set_xticks(xs, columns)
    ax.set_ylabel("top-1 (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)
