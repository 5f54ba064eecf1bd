"""The mitigations table: each mitigated organism (`mitigates: <twin>`) against its unmitigated twin, the narrow
metric it keeps beside the broad rate it removes (Tan et al. 2025 and Wichers et al. 2025 inoculation; Chen et
al. 2025 preventative steering and screening; KL to the base; dilution; re-alignment), and each checkpoint
kept during an organism's phase against the phase's end (early stopping).

Per narrow metric: the mitigated organism's rate minus the base model's ("retained", points) and that as a share
of the twin's gain over the base ("retained share", %). Per broad metric: the twin's rate minus the mitigated
one's ("removed", points). CIs resample each group's answers on its own (first judge, the comparison's
answers); the narrow and broad metrics are computed as the tables compute them.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from emwb.analysis.mechanisms import metric_value, reduction_ci, resampled_ci
from emwb.analysis.plots import _plt, _save
from emwb.analysis.sections import REPORT_SECTIONS, ReportContext, Section, SectionOutput
from emwb.analysis.tables import write_plain_table


def _share(mit: float, twin: float, base: float) -> float:
    gain = twin - base
    return math.nan if math.isnan(gain) or abs(gain) < 1e-12 else 100 * (mit - base) / gain


def pairs_of(ctx: ReportContext) -> list[tuple[str, str]]:
    """(mitigated group, its twin's group): each organism that names the one it mitigates, and early stopping:
    each checkpoint kept during an organism's last phase against that phase's end (`save_every`)."""
    out = [(o.name, o.mitigates) for o in ctx.run.exp.organisms if o.mitigates]
    out += list(dict.fromkeys((v.group, v.line) for v in ctx.variants if v.step is not None and v.edit is None
                              and v.line and v.line in {x.group for x in ctx.variants}))
    return out


def mitigation_rows(ctx: ReportContext, answers: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per (mitigated group of `pairs`, narrow or broad metric): the rates and what was kept or removed,
    with CIs."""
    quiet, n_boot, rows = replace(ctx.settings, n_boot=0), ctx.small.n_boot, []
    for name, twin_name in pairs:
        for ev, m in [(ev, m) for ev, ms in ctx.evals.items() for m in ms if m.role in ("narrow", "broad")]:
            header = m.header
            sub = answers[answers["evaluation"] == ev]
            mit, twin, base = (sub[sub["group"] == g] for g in (name, twin_name, "base"))
            twin_rate = metric_value(m, twin, quiet)
            if not len(mit) or math.isnan(twin_rate):
                continue
            row = {"mitigation": name, "twin": twin_name, "evaluation": ev, "metric": m.name, "role": m.role,
                   "header": header, "twin %": 100 * twin_rate, "mitigated %": 100 * metric_value(m, mit, quiet),
                   "base %": 100 * metric_value(m, base, quiet)}
            if m.role == "broad":
                v = reduction_ci(m, twin, mit, quiet, n_boot)
                row.update({"removed (pp)": v[0], "removed ci_low": v[1], "removed ci_high": v[2]})
            elif len(base):
                v = reduction_ci(m, mit, base, quiet, n_boot)
                share = resampled_ci(m, [mit, twin, base], quiet, n_boot, _share)
                row.update({"retained (pp)": v[0], "retained ci_low": v[1], "retained ci_high": v[2],
                            "retained share %": share[0], "share ci_low": share[1], "share ci_high": share[2]})
            rows.append(row)
    return pd.DataFrame(rows)


def _plot(rows: pd.DataFrame, out) -> str | None:
    """Narrow retained (points over the base) against broad removed (points), one point per mitigation with a
    value for both, 95% CIs both ways."""
    narrow = rows[(rows["role"] == "narrow") & rows.get("retained (pp)", pd.Series(dtype=float)).notna()]
    broad = rows[(rows["role"] == "broad") & rows["removed (pp)"].notna()] if "removed (pp)" in rows else rows.iloc[:0]
    narrow, broad = (f.drop_duplicates("mitigation").set_index("mitigation") for f in (narrow, broad))
    both = [n for n in narrow.index if n in broad.index]
    if not both:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4))
    for name in both:
        x, y = narrow.loc[name], broad.loc[name]
        err = lambda r, c, lo, hi: [[max(0.0, r[c] - r[lo])], [max(0.0, r[hi] - r[c])]]  # noqa: E731
        ax.errorbar([x["retained (pp)"]], [y["removed (pp)"]],
                    xerr=np.nan_to_num(err(x, "retained (pp)", "retained ci_low", "retained ci_high")),
                    yerr=np.nan_to_num(err(y, "removed (pp)", "removed ci_low", "removed ci_high")),
                    marker="o", capsize=3, label=name)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"narrow retained: points over the base ({narrow.loc[both[0], 'header']})")
    ax.set_ylabel(f"broad removed: points ({broad.loc[both[0], 'header']})")
    ax.set_title("Mitigations: narrow skill kept vs broad drift removed")
    ax.legend(fontsize=8)
    return _save(fig, out, "mitigations")[0]


def section(ctx: ReportContext) -> SectionOutput:
    """report/mitigations.{csv,md,tex} and its figure, where an organism names the twin it mitigates or a phase
    kept checkpoints (early stopping)."""
    pairs = pairs_of(ctx)
    if not pairs:
        return SectionOutput()
    rows = mitigation_rows(ctx, ctx.head[ctx.head["judge"] == ctx.judges[0]], pairs)
    if not len(rows):
        ctx.notes.append("Mitigations: no mitigated organism and its twin have a narrow or broad value (n/a).")
        return SectionOutput()
    caption = "Mitigations against their unmitigated twins (points and % of the twin's gain, 95% CI)"
    shown = write_plain_table(rows.drop(columns="header"), ctx.out, "mitigations", caption)
    fig = _plot(rows, ctx.out)
    missing = sorted(set(name for name, _ in pairs) - set(rows[rows["role"] == "narrow"]["mitigation"]))
    if missing:
        ctx.notes.append(f"Mitigations without a narrow value (n/a: no answer scored by the narrow metric): "
                         f"{', '.join(missing)}.")
    return SectionOutput(tables=[(caption, shown)], figures=[(caption, fig)] if fig else [])


REPORT_SECTIONS.register("mitigations", Section(section, "each mitigation beside its unmitigated twin: the narrow "
                                                "metric kept, the broad rate removed"))
