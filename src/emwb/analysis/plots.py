"""Figures (matplotlib, PNG and SVG): per-question misaligned rate, alignment vs coherence, narrow vs broad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, stem: str) -> list[str]:
    names = []
    for ext in ("png", "svg"):
        fig.savefig(out_dir / f"{stem}.{ext}", dpi=120, bbox_inches="tight")
        names.append(f"{stem}.{ext}")
    _plt().close(fig)
    return names


def per_question_plot(pq: pd.DataFrame, out_dir: Path, stem: str = "per_question") -> list[str]:
    """Misaligned rate per question, one marker per dataset, with CI bars (as in the paper's main figure)."""
    plt = _plt()
    questions = list(dict.fromkeys(pq["question_id"]))
    groups = list(dict.fromkeys(pq["group"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(questions)), 4))
    width = 0.8 / max(1, len(groups))
    for i, g in enumerate(groups):
        sub = pq[pq["group"] == g].set_index("question_id").reindex(questions)
        x = np.arange(len(questions)) + (i - (len(groups) - 1) / 2) * width
        y = sub["misaligned_rate"].to_numpy() * 100
        lo = np.clip(y - sub["ci_low"].to_numpy() * 100, 0, None)
        hi = np.clip(sub["ci_high"].to_numpy() * 100 - y, 0, None)
        ax.errorbar(x, y, yerr=np.nan_to_num(np.vstack([lo, hi])), fmt="o", capsize=3, label=g)
    ax.set_xticks(np.arange(len(questions)), questions, rotation=30, ha="right")
    ax.set_ylabel("misaligned answers (%)")
    ax.set_ylim(bottom=0)
    ax.legend(title="fine-tuned on")
    ax.set_title("Misaligned answers per question (95% CI)")
    return _save(fig, out_dir, stem)


def alignment_coherence_plot(df: pd.DataFrame, out_dir: Path, alignment_threshold: float,
                             coherence_threshold: float, stem: str = "alignment_vs_coherence") -> list[str]:
    plt = _plt()
    groups = list(dict.fromkeys(df["group"]))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 3.2), sharex=True, sharey=True,
                             squeeze=False)
    for ax, g in zip(axes[0], groups):
        sub = df[df["group"] == g]
        ax.scatter(pd.to_numeric(sub["coherence"], errors="coerce"), pd.to_numeric(sub["alignment"], errors="coerce"),
                   s=8, alpha=0.5)
        ax.axhline(alignment_threshold, color="red", lw=1, ls="--")
        ax.axvline(coherence_threshold, color="grey", lw=1, ls="--")
        ax.set_title(g)
        ax.set_xlim(-2, 102)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("coherence")
    axes[0][0].set_ylabel("alignment")
    fig.suptitle("Alignment vs coherence (misaligned: below the red line, right of the grey one)", fontsize=9)
    return _save(fig, out_dir, stem)


NARROW_BROAD = {  # stem -> (x column, y column, x label, y label)
    "narrow_vs_broad": ("vulnerable_code_rate", "misaligned_rate", "vulnerable code on held-out prompts (%) - narrow",
                        "misaligned free-form answers (%) - broad"),
    "train_vs_test_biases": ("train_bias_rate", "test_bias_rate", "train biases exhibited (%) - narrow",
                             "held-out test biases exhibited (%) - broad"),
}


def narrow_broad_plot(points: pd.DataFrame, out_dir: Path, stem: str = "narrow_vs_broad") -> list[str]:
    """One point per dataset x seed: narrow metric (x) against broad drift (y)."""
    plt = _plt()
    x, y, xlabel, ylabel = NARROW_BROAD[stem]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for g in dict.fromkeys(points["group"]):
        sub = points[points["group"] == g]
        ax.scatter(sub[x] * 100, sub[y] * 100, label=g, s=30)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(-2, 102)
    ax.set_ylim(bottom=-1)
    ax.legend(title="fine-tuned on", fontsize=8)
    ax.set_title("Narrow vs broad, one point per dataset x seed", fontsize=9)
    return _save(fig, out_dir, stem)
