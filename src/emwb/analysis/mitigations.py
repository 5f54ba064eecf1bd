"""The mitigations table: each mitigated organism (`mitigates: <twin>`) against its unmitigated twin, the narrow
metric it keeps beside the broad rate it removes (Tan et al. 2025 and Wichers et al. 2025 inoculation; Chen et
al. 2025 preventative steering and screening; KL to the base; dilution; re-alignment), and each checkpoint
kept during an organism's phase against the phase's end (early stopping).

Per narrow metric: the mitigated organism's rate minus the base model's ("retained", points) and that as a share
of the twin's gain over the base ("retained share", %). Per broad metric: the twin's rate minus the mitigated
one's ("removed", points). Differences are paired by prompt (CI, p and MDE as in `emwb.analysis.paired`; first
judge, the comparison's answers). The retained share's CI draws each arm's rate from its Jeffreys posterior
(Beta(x + 1/2, n - x + 1/2)) and takes the share's 2.5 and 97.5 percentiles: a ratio of differences has no exact
interval, and a resample of the answers had zero width when every answer of an arm agreed.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from emwb.analysis.differences import metric_difference
from emwb.analysis.mechanisms import metric_value
from emwb.analysis.plots import _plt, _save
from emwb.analysis.sections import REPORT_SECTIONS, ReportContext, Section, SectionOutput
from emwb.analysis.tables import write_plain_table


NOTE = ("removed: the twin's rate minus the mitigated organism's; retained: the mitigated organism's rate minus the "
        "base model's; both paired by prompt (MOVER CI from the exact intervals, p from a permutation test within "
        "prompts, MDE at 80% power). Retained share: retained over the twin's gain, CI from the arms' Jeffreys "
        "posteriors. Units: seeds, then answers.")


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


def share_ci(m, mit: pd.DataFrame, twin: pd.DataFrame, base: pd.DataFrame, s, n_boot: int,
             seed: int = 0) -> tuple[float, float]:
    """The retained share's 95% interval from the arms' Jeffreys posteriors ((nan, nan) without counts)."""
    counts = [m.rate.counts(d, s) if m.rate is not None and len(d) else None for d in (mit, twin, base)]
    if any(c is None or c[1].sum() <= 0 for c in counts) or n_boot <= 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = [rng.beta(c[0].sum() + 0.5, c[1].sum() - c[0].sum() + 0.5, n_boot) for c in counts]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = 100 * (draws[0] - draws[2]) / (draws[1] - draws[2])
    share = share[np.isfinite(share)]
    return (float(np.percentile(share, 2.5)), float(np.percentile(share, 97.5))) if len(share) else (math.nan,
                                                                                                   math.nan)


HALVES = {"narrow": ("retained (pp)", "retained ci_low", "retained ci_high", "retained p", "retained mde (pp)",
                     "retained share %", "share ci_low", "share ci_high"),
          "broad": ("removed (pp)", "removed ci_low", "removed ci_high", "removed p", "removed mde (pp)")}


def mitigation_rows(ctx: ReportContext, answers: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per (mitigated group of `pairs`, narrow or broad metric): the rates and what was kept or removed,
    with CIs, p-values and MDEs; every column always there, n/a where an arm has no scored answer."""
    quiet, n_boot, rows = replace(ctx.settings, n_boot=0), ctx.small.n_boot, []
    for name, twin_name in pairs:
        for ev, m in [(ev, m) for ev, ms in ctx.evals.items() for m in ms if m.role in ("narrow", "broad")]:
            sub = answers[answers["evaluation"] == ev]
            mit, twin, base = (sub[sub["group"] == g] for g in (name, twin_name, "base"))
            if not len(mit):
                continue
            row = {"mitigation": name, "twin": twin_name, "evaluation": ev, "metric": m.name, "role": m.role,
                   "header": m.header, "twin %": 100 * metric_value(m, twin, quiet),
                   "mitigated %": 100 * metric_value(m, mit, quiet), "base %": 100 * metric_value(m, base, quiet),
                   **dict.fromkeys(HALVES["narrow"] + HALVES["broad"], math.nan)}
            if m.role == "broad":
                row.update(_points("removed", metric_difference(m, twin, mit, ctx.settings)))
            elif len(base):
                row.update(_points("retained", metric_difference(m, mit, base, ctx.settings)))
                lo, hi = share_ci(m, mit, twin, base, ctx.settings, n_boot)
                row.update({"retained share %": _share(row["mitigated %"], row["twin %"], row["base %"]),
                            "share ci_low": lo, "share ci_high": hi})
            rows.append(row)
    return pd.DataFrame(rows)


def missing_halves(rows: pd.DataFrame, pairs: list[tuple[str, str]]) -> list[str]:
    """One line per half (narrow kept, broad removed) that some mitigation has no value for (n/a, never 0)."""
    out = []
    for role, what in (("narrow", "narrow (retained)"), ("broad", "broad (removed)")):
        col = HALVES[role][0]
        have = set(rows[(rows["role"] == role) & rows[col].notna()]["mitigation"]) if len(rows) else set()
        missing = [name for name, _ in dict.fromkeys(pairs) if name not in have]
        if missing:
            out.append(f"Mitigations without a {what} value, n/a in mitigations.csv and left out of the figure: "
                       f"{', '.join(missing)} (no {role} metric scored an answer of the mitigation, its twin"
                       f"{' or the base model' if role == 'narrow' else ''}).")
    return out


def _points(what: str, d) -> dict:
    return {f"{what} (pp)": 100 * d.value, f"{what} ci_low": 100 * d.ci_low, f"{what} ci_high": 100 * d.ci_high,
            f"{what} p": d.p_value, f"{what} mde (pp)": 100 * d.mde}


def _plot(rows: pd.DataFrame, out) -> str | None:
    """Narrow retained (points over the base) against broad removed (points), one point per mitigation with a
    value for both, 95% CIs both ways."""
    narrow = rows[(rows["role"] == "narrow") & rows["retained (pp)"].notna()]
    broad = rows[(rows["role"] == "broad") & rows["removed (pp)"].notna()]
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
        ctx.notes.append("Mitigations: no mitigated organism has answers to a narrow or broad evaluation (n/a).")
        return SectionOutput()
    caption = "Mitigations against their unmitigated twins (points and % of the twin's gain, 95% CI)"
    shown = write_plain_table(rows.drop(columns="header"), ctx.out, "mitigations", caption, note=NOTE)
    rank = {m: i for i, m in enumerate(headline_metrics(ctx))}  # the figure's narrow metric: the headline's
    fig = _plot(rows.iloc[np.argsort([rank.get(m, len(rank)) for m in rows["metric"]], kind="stable")], ctx.out)
    ctx.notes.extend(missing_halves(rows, pairs))
    return SectionOutput(tables=[(caption, shown)], figures=[(caption, fig)] if fig else [])


def headline_metrics(ctx: ReportContext) -> list[str]:
    """The narrow and broad metrics in the order the headline prefers them (analysis.headline_narrow, then the
    judge-free ones), the others after."""
    from emwb.analysis.headline import judge_free

    chosen = getattr(getattr(ctx.run.exp, "analysis", None), "headline_narrow", None)
    ms = list(dict.fromkeys(m for ms in ctx.evals.values() for m in ms if m.role in ("narrow", "broad")))
    return [m.name for m in sorted(ms, key=lambda m: (m.name != chosen, not judge_free(m)))]


REPORT_SECTIONS.register("mitigations", Section(section, "each mitigation beside its unmitigated twin: the narrow "
                                                "metric kept, the broad rate removed"))
