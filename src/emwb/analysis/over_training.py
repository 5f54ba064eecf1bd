"""Metrics over training: the comparison rows of checkpoints kept during a phase (`save_every`), as a table per
checkpoint and a figure of the narrow and broad rates against the training step, one line per organism, with
the 95% CI (seeds, then answers) as a band."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from emwb.analysis.metrics import Metric
from emwb.analysis.tables import metric_columns
from emwb.layout import BASE, Variant


def over_training_rows(variants: Sequence[Variant], comp: pd.DataFrame) -> pd.DataFrame:
    """Rows of `comp` (one judge) for every phase that kept checkpoints: `line` (the phase's row name) and
    `step` (0 for the base model before a first phase, the checkpoint's step, max_steps at the phase's end)."""
    lines: dict[str, list[tuple[str, int]]] = {v.line: [] for v in variants if v.step is not None}
    for v in variants:
        if v.line in lines:
            step = v.step if v.step is not None else v.phase_steps
            if (v.group, step) not in lines[v.line]:
                lines[v.line].append((v.group, step))
            if v.phase_index == 0 and (BASE, 0) not in lines[v.line]:
                lines[v.line].insert(0, (BASE, 0))
    rows = []
    for line, points in lines.items():
        for group, step in sorted(points, key=lambda p: p[1]):
            match = comp[comp["group"] == group]
            if len(match):
                rows.append({**match.iloc[0].to_dict(), "group": line, "step": step, "row": group})
    return pd.DataFrame(rows)


def over_training_plot(rows: pd.DataFrame, evals: dict[str, list[Metric]], out_dir: Path,
                       stem: str = "over_training") -> tuple[str | None, list[str]]:
    """One panel per narrow or broad rate, rate (%) against step, a line and CI band per organism. Returns the
    figure's file name (None when no such rate is defined) and a note for every rate with no value at any step:
    its panel is drawn empty and says so, never left out in silence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(c, h, cis) for c, m, h, cis in metric_columns(evals)
              if m.role in ("narrow", "broad") and cis and c in rows]
    if not panels:
        return None, []
    notes = []
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
    for ax, (col, header, cis) in zip(axes[0], panels):
        ax.set_xlabel("training step")
        ax.set_ylabel(header)
        if not rows[col].notna().any():
            notes.append(f"Over training: {header} has no value at any step (n/a: no answer was scored for it); "
                         "its panel is empty.")
            ax.text(0.5, 0.5, "n/a at every step\n(no scored answers)", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_ylim(0, 100)
            continue
        for line in dict.fromkeys(rows["group"]):
            sub = rows[rows["group"] == line].sort_values("step")
            x = sub["step"].to_numpy(dtype=float)
            ax.plot(x, sub[col].to_numpy(dtype=float) * 100, marker="o", label=line)
            ax.fill_between(x, sub[cis[0]].to_numpy(dtype=float) * 100, sub[cis[1]].to_numpy(dtype=float) * 100,
                            alpha=0.2)
        top = np.nanmax(rows[cis[1]].to_numpy(dtype=float) * 100) if rows[cis[1]].notna().any() else 0.0
        ax.set_ylim(0, float(min(100.0, max(5.0, top * 1.15))))
        ax.legend(title="organism", fontsize=8)
    fig.suptitle("Narrow and broad rates over training (95% CI bands)", fontsize=9)
    for ext in ("png", "svg"):
        fig.savefig(out_dir / f"{stem}.{ext}", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return f"{stem}.png", notes
