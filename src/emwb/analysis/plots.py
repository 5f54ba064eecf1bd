"""Figures (matplotlib, PNG and SVG): per-question misaligned rate, alignment vs coherence, narrow vs broad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


RASTER_ABOVE = 2_000  # points: a scatter of more is drawn as an image inside the SVG (one element, not one each)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, stem: str) -> list[str]:
    """STEM.png and STEM.svg (its text as text, not glyph outlines: a fraction of the size); their names."""
    import matplotlib

    names = []
    for ext in ("png", "svg"):
        with matplotlib.rc_context({"svg.fonttype": "none"}):
            fig.savefig(out_dir / f"{stem}.{ext}", dpi=120, bbox_inches="tight")
        names.append(f"{stem}.{ext}")
    _plt().close(fig)
    return names


def _rate_axis(ax, values: np.ndarray, axis: str = "y") -> None:
    """Rates stay on 0-100: from 0 to a little above the largest value (at least 5)."""
    top = np.nanmax(values) if np.isfinite(values).any() else 0.0
    lim = (0, float(min(100.0, max(5.0, top * 1.15))))
    (ax.set_ylim if axis == "y" else ax.set_xlim)(*lim)


def per_question_plot(pq: pd.DataFrame, out_dir: Path, column: str = "misaligned_rate",
                      ci: tuple[str, str] = ("ci_low", "ci_high"), label: str = "misaligned answers (%)",
                      stem: str = "per_question", link=None) -> list[str]:
    """A rate per question, one marker per organism, with CI bars (as in the paper's main figure). With
    `link(group, question) -> address`, each marker links there in the SVG (the report's answer browser)."""
    plt = _plt()
    questions = list(dict.fromkeys(pq["question_id"]))
    groups = list(dict.fromkeys(pq["group"]))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(questions)), 4))
    width = 0.8 / max(1, len(groups))
    tops = []
    for i, g in enumerate(groups):
        sub = pq[pq["group"] == g].set_index("question_id").reindex(questions)
        x = np.arange(len(questions)) + (i - (len(groups) - 1) / 2) * width
        y = sub[column].to_numpy(dtype=float) * 100
        lo = np.clip(y - sub[ci[0]].to_numpy(dtype=float) * 100, 0, None)
        hi = np.clip(sub[ci[1]].to_numpy(dtype=float) * 100 - y, 0, None)
        tops.append(y + np.nan_to_num(hi))
        bars = ax.errorbar(x, y, yerr=np.nan_to_num(np.vstack([lo, hi])), fmt="o", capsize=3, label=g)
        if link is not None:
            dots = ax.scatter(x, y, s=40, color=bars.lines[0].get_color(), zorder=3)
            dots.set_urls([link(g, q) for q in questions])
    ax.set_xticks(np.arange(len(questions)), questions, rotation=30, ha="right")
    ax.set_ylabel(label)
    _rate_axis(ax, np.concatenate(tops) if tops else np.array([0.0]))
    ax.legend(title="organism")
    ax.set_title(f"{label} per question (95% CI)")
    return _save(fig, out_dir, stem)


def headline_plot(panels: list[tuple[str, list[str], np.ndarray, np.ndarray, np.ndarray]], out_dir: Path,
                  stem: str = "headline", link=None) -> list[str]:
    """The headline's columns side by side: a panel per column (title, organisms, rate, CI low, CI high, in %),
    a marker per organism with its 95% CI; n/a where a rate is missing. With `link(group) -> address`, each marker
    links there in the SVG (the report's answer browser)."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.0, 3.6 * len(panels)), 3.6), squeeze=False)
    for ax, (title, groups, y, lo, hi) in zip(axes[0], panels):
        x = np.arange(len(groups))
        err = np.nan_to_num(np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)]))
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor="grey", capsize=4)
        dots = ax.scatter(x, y, s=45, zorder=3, c=[f"C{i % 10}" for i in range(len(groups))])
        if link is not None:
            dots.set_urls([link(g) for g in groups])
        for i in np.flatnonzero(np.isnan(y)):
            ax.text(x[i], 1, "n/a", ha="center", fontsize=8, color="grey")
        ax.set_xticks(x, groups, rotation=30 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_title(title, fontsize=9)
        _rate_axis(ax, np.concatenate([y, hi]))
    axes[0][0].set_ylabel("% of answers (95% CI)")
    fig.tight_layout()
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
                   s=8, alpha=0.5, rasterized=len(sub) > RASTER_ABOVE)
        ax.axhline(alignment_threshold, color="red", lw=1, ls="--")
        ax.axvline(coherence_threshold, color="grey", lw=1, ls="--")
        ax.set_title(g)
        ax.set_xlim(-2, 102)
        ax.set_ylim(-2, 102)
        ax.set_xlabel("coherence")
    axes[0][0].set_ylabel("alignment")
    fig.suptitle("Alignment vs coherence (misaligned: below the red line, right of the grey one)", fontsize=9)
    return _save(fig, out_dir, stem)


def narrow_broad_plot(points: pd.DataFrame, x: str, y: str, xlabel: str, ylabel: str, out_dir: Path,
                      stem: str) -> list[str]:
    """One point per organism x seed: a narrow metric (x) against a broad one (y), both on 0-100."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for g in dict.fromkeys(points["group"]):
        sub = points[points["group"] == g]
        ax.scatter(sub[x] * 100, sub[y] * 100, label=g, s=30)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 100)
    _rate_axis(ax, points[y].to_numpy(dtype=float) * 100)
    ax.legend(title="organism", fontsize=8)
    ax.set_title("Narrow vs broad, one point per organism x seed", fontsize=9)
    return _save(fig, out_dir, stem)


def judge_scatter_plot(wide: pd.DataFrame, a: str, b: str, out_dir: Path, stem: str) -> list[str]:
    """Two judges' alignment and coherence scores of the same answers, one panel each."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.4), squeeze=False)
    for ax, rubric in zip(axes[0], ("alignment", "coherence")):
        x = pd.to_numeric(wide.get(f"{rubric}:{a}"), errors="coerce")
        y = pd.to_numeric(wide.get(f"{rubric}:{b}"), errors="coerce")
        ax.scatter(x, y, s=8, alpha=0.5, rasterized=len(wide) > RASTER_ABOVE)
        ax.plot([0, 100], [0, 100], color="grey", lw=1, ls="--")
        ax.set_xlim(-2, 102)
        ax.set_ylim(-2, 102)
        ax.set_xlabel(a, fontsize=8)
        ax.set_ylabel(b, fontsize=8)
        ax.set_title(rubric, fontsize=9)
    return _save(fig, out_dir, stem)
