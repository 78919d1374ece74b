"""Figures for reports: sample grids, patch-similarity histograms, accuracy against bit width."""

from __future__ import annotations

import textwrap
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


SAMPLES_CAPTION = (
    "Synthesized images (psaq, psaq-noent) are optimized in the model's normalized input space so that the model "
    "sees diverse patch similarities (psaq) and the label above each image; they are not meant to look like the "
    "training images, and most look like noise or texture. What calibration takes from them is the range of every "
    "activation they produce inside the model. gaussian: N(0, 1) noise, no label. real: training images, true labels. "
    "Row labels: how many of the row's images the float model classifies as their label."
)


def sample_grid(sets: Mapping[str, tuple[torch.Tensor, torch.Tensor]], spec: InputSpec, path: str | Path,
                per_row: int = 8, agreement: Mapping[str, tuple[int, int]] | None = None) -> Path:
    """One row of images per named set, shown as pixels (normalization undone), each titled
    with its label: the pseudo-label a synthesized image was optimized for, the true label of
    a real one, none for noise. ``agreement``: per set, (images the model classifies as their
    label, labelled images), written under the row's name."""
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    names = spec.class_names
    fig, axes = _pyplot().subplots(len(sets), per_row, figsize=(per_row * 1.15, len(sets) * 1.45 + 0.9), squeeze=False)
    for r, (name, (images, labels)) in enumerate(sets.items()):
        pixels = (images[:per_row] * std + mean).clamp(0, 1)
        for c in range(per_row):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(pixels):
                shown = pixels[c].permute(1, 2, 0).numpy()
                ax.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray" if shown.shape[-1] == 1 else None,
                          vmin=0, vmax=1)
                label = int(labels[c]) if c < len(labels) else -1
                if label >= 0:
                    ax.set_title(names[label] if names else str(label), fontsize=7)
        hits = (agreement or {}).get(name)
        row_label = f"{name}\n{hits[0]}/{hits[1]} as labelled" if hits and hits[1] else name
        axes[r][0].set_ylabel(row_label, fontsize=8)
    fig.suptitle("Calibration images per mode (titles: the label each image was made or drawn for)", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.text(0.5, 0.01, textwrap.fill(SAMPLES_CAPTION, 150), ha="center", va="bottom", fontsize=6.5)
    return _save(fig, path)


def similarity_histograms(sims: Mapping[str, Sequence[torch.Tensor]], path: str | Path,
                          entropies: Mapping[str, Sequence[float]] | None = None, reference: str = "real") -> Path:
    """The paper's key figure, one row per image set and one column per block: the distribution
    of cosine similarities between patch tokens after self-attention (spread out = diverse).
    Every row draws the ``reference`` set's distribution as a grey outline to compare with, and
    writes its differential entropy per block (``entropies``, the quantity synthesis raises)."""
    plt = _pyplot()
    names = sorted(sims, key=lambda n: n != reference)  # the reference on top, the others in their order
    n_blocks = len(next(iter(sims.values())))
    ref = sims.get(reference)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(names), n_blocks, figsize=(1.9 * n_blocks + 1.2, 1.35 * len(names) + 1.0),
                             squeeze=False, sharex=True)
    for r, name in enumerate(names):
        color = colors[list(sims).index(name) % len(colors)]
        for b in range(n_blocks):
            ax = axes[r][b]
            ax.hist(sims[name][b].numpy(), bins=50, range=(-1, 1), density=True, color=color, alpha=0.75)
            if ref is not None and name != reference:
                ax.hist(ref[b].numpy(), bins=50, range=(-1, 1), density=True, histtype="step", color="0.35",
                        linewidth=0.8)
            ax.set_yticks([])
            ax.tick_params(axis="x", labelsize=7)
            if entropies is not None and name in entropies:
                ax.text(0.03, 0.92, f"H = {entropies[name][b]:+.2f}", transform=ax.transAxes, fontsize=7, va="top",
                        bbox=dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.8, linewidth=0))
            if r == 0:
                ax.set_title(f"block {b}", fontsize=9)
            if r == len(names) - 1:
                ax.set_xlabel("cosine similarity", fontsize=7)
        axes[r][0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    outline = f"; grey outline: {reference}" if ref is not None else ""
    fig.suptitle("Patch similarity after self-attention, one row per image set, one column per block\n"
                 f"(spread out = diverse, as real images; a spike near 1 = patches alike, as noise{outline}; "
                 "H: differential entropy of the similarities, the quantity psaq raises, higher = more diverse)",
                 fontsize=8.5)
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
