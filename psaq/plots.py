"""Figures for reports: sample grids, patch-similarity histograms, accuracy against bit width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from psaq.data import InputSpec
from psaq.models.checkpoint import atomic_write


def _pyplot():
    """matplotlib on first use: half a second that every stage command and flow would pay at start."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png"))
    plt.close(fig)
    return out


def sample_grid(sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], spec: InputSpec, path: str | Path,
                per_row: int = 8) -> Path:
    """One row of images per named set, shown as pixels (normalization undone), each titled
    with its label: the pseudo-label a synthesized image was optimized for, the true label of
    a real one, none for noise."""
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    names = spec.class_names
    fig, axes = _pyplot().subplots(len(sets), per_row, figsize=(per_row * 1.15, len(sets) * 1.45), squeeze=False)
    for r, (name, (images, labels)) in enumerate(sets.items()):
        pixels = (images[:per_row] * std + mean).clamp(0, 1)
        for c in range(per_row):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(pixels):
                ax.imshow(pixels[c].permute(1, 2, 0).numpy())
                label = int(labels[c]) if c < len(labels) else -1
                if label >= 0:
                    ax.set_title(names[label] if names else str(label), fontsize=7)
        axes[r][0].set_ylabel(name, fontsize=8)
    fig.suptitle("Calibration images per mode (titles: the label each image was made or drawn for)", fontsize=9)
    return _save(fig, path)


def similarity_histograms(sims: Mapping[str, Sequence[torch.Tensor]], path: str | Path) -> Path:
    """The paper's key figure, for every block: patch-similarity distributions of real, noise
    and synthesized images (wider = more diverse)."""
    n_blocks = len(next(iter(sims.values())))
    cols = min(4, n_blocks)
    rows = -(-n_blocks // cols)
    fig, axes = _pyplot().subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for b in range(rows * cols):
        ax = axes[b // cols][b % cols]
        if b >= n_blocks:
            ax.axis("off")
            continue
        for name, per_block in sims.items():
            ax.hist(per_block[b].numpy(), bins=60, range=(-1, 1), density=True, histtype="step", label=name)
        ax.set_title(f"block {b}", fontsize=9)
        ax.set_xlabel("cosine similarity of two patch tokens", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Patch similarity after self-attention, per block (each pair of patches once)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def accuracy_vs_bits(rows: Mapping[str, Mapping[str, tuple[float, float]]], columns: Sequence[str], path: str | Path,
                     fp32: float | None = None) -> Path:
    """Top-1 (mean ± std) per calibration mode across bit settings."""
    fig, ax = _pyplot().subplots(figsize=(max(6, 0.9 * len(columns) + 2), 3.8))
    xs = list(range(len(columns)))
    for name, cells in rows.items():
        means = [cells.get(c, (float("nan"), 0))[0] for c in columns]
        stds = [cells.get(c, (float("nan"), 0))[1] for c in columns]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
    if fp32 is not None:
        ax.axhline(fp32, color="gray", linestyle="--", label="FP32")
    ax.set_xticks(xs, columns, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("bit setting (WxAy: x-bit weights, y-bit activations; observer if not minmax)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("Top-1 per calibration mode; error bars: ±1 std over runs (models × seeds)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def paired_differences(rows: Sequence[dict], path: str | Path) -> Path:
    """Each comparison's paired top-1 difference per bit setting, with its 95 % interval."""
    columns = list(dict.fromkeys(r["column"] for r in rows))
    pairs = list(dict.fromkeys((r["a"], r["b"]) for r in rows))
    fig, ax = _pyplot().subplots(figsize=(max(6, 0.9 * len(columns) + 2), 3.8))
    width = 0.8 / max(1, len(pairs))
    for i, (a, b) in enumerate(pairs):
        cells = {r["column"]: r for r in rows if (r["a"], r["b"]) == (a, b)}
        xs = [j + (i - (len(pairs) - 1) / 2) * width for j, c in enumerate(columns) if c in cells]
        got = [cells[c] for c in columns if c in cells]
        means = [r["mean"] for r in got]
        err = [[r["mean"] - r["low"] for r in got], [r["high"] - r["mean"] for r in got]]
        ax.errorbar(xs, means, yerr=err, fmt="o", capsize=3, label=f"{a} − {b}")
    ax.axhline(0, color="gray", linewidth=1)
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel("bit setting (WxAy: x-bit weights, y-bit activations; observer if not minmax)", fontsize=8)
    ax.set_ylabel("top-1 difference A − B (points)\nabove 0: A is better")
    ax.set_title("Paired differences, A − B, on the same models, seeds and test images;\n"
                 "bars: 95 % interval (bootstrap over runs and test images); a bar across 0: no difference shown",
                 fontsize=8)
    if pairs:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no two calibration modes share runs", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    return _save(fig, path)
