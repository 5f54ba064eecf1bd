"""The report's top: what was run in a sentence, each organism's headline rates in a sentence, and a compact
headline table (organism, the broad rate (misaligned % for the free-form evaluation), CI, EM %, narrow %, CI,
coherent share, answers) whose rows link to their answers."""

from __future__ import annotations

import math
import re

import pandas as pd

from emwb.analysis import plots
from emwb.analysis.html import answers_link
from emwb.analysis.metrics import Metric
from emwb.analysis.sections import ReportContext
from emwb.analysis.tables import ci_text, markdown, metric_columns, p_text
from emwb.catalog.detectors import DETECTORS


def _pct(v) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{100 * float(v):.1f}"


def _ci(row, cis: list[str]) -> str:
    return ci_text(100 * float(row[cis[0]]), 100 * float(row[cis[1]])) if cis else "n/a"


def judge_free(m: Metric) -> bool:
    """Whether a metric reads rule-based detectors only (no judge's score)."""
    return bool(m.rubrics) and all(r in DETECTORS for r in m.rubrics)


def _narrow_rank(ctx: ReportContext, m: Metric) -> int:
    """The headline's narrow column: the one analysis.headline_narrow names, else judge-free before judged."""
    chosen = ctx.run.exp.analysis.headline_narrow
    return 0 if m.name == chosen else 1 if chosen is None and judge_free(m) else 2


def _columns(ctx: ReportContext) -> dict[str, tuple[str, list[str], str, Metric]]:
    """role -> (column, CI columns, header, metric) for the broad, narrow, EM, coherent-share and answers columns.

    The broad column is the first broad metric with values (the first one when none has: n/a, never dropped); the
    EM, coherent and answers columns are that evaluation's own; the narrow one is ordered by `_narrow_rank`. A
    metric that two evaluations score names its evaluation in the header (`misaligned % [free-form]`)."""
    em = "em_share_scored" if ctx.settings.inclusive else "em_share"
    named = {em: "em", "coherent_share": "coherent", "n": "answers"}
    evs = [ev for ev, ms in ctx.evals.items() for _ in ms]  # metric_columns' order
    found = [(m.role or named.get(m.name), col, m, header, cis, ev)
             for ev, (col, m, header, cis) in zip(evs, metric_columns(ctx.evals))
             if col in ctx.comp and (m.role or m.name in named)]

    def rank(f) -> tuple:
        role, col, m, _, _, ev = f
        same = role in ("em", "coherent", "answers") and ev == broad_ev
        return (not same, bool(ctx.comp[col].isna().all()), _narrow_rank(ctx, m) if role == "narrow" else 0)

    broad_ev = None
    out: dict[str, tuple[str, list[str], str, Metric]] = {}
    for role in ("broad", "narrow", "em", "coherent", "answers"):
        mine = sorted((f for f in found if f[0] == role), key=rank)
        if mine:
            _, col, m, header, cis, ev = mine[0]
            broad_ev = ev if role == "broad" else broad_ev
            header = re.sub(r" \((narrow|broad)\)|(?<=\()(narrow|broad), ", "", header)
            out[role] = (col, cis, header if role in ("broad", "narrow") else
                         {"em": "EM %", "coherent": "coherent %", "answers": "answers"}[role] + _label(header), m)
    at = {f[1]: i for i, f in enumerate(found)}
    return dict(sorted(out.items(), key=lambda kv: at[kv[1][0]]))  # in the evaluations' metric order


def _label(header: str) -> str:
    """' [evaluation]' where a header names its evaluation, else ''."""
    found = re.search(r" \[[^\]]+\]$", header)
    return found.group(0) if found else ""


def other_evaluations(ctx: ReportContext) -> list[str]:
    """A note naming the evaluations whose broad rate the headline does not show (comparison.md has them)."""
    cols = _columns(ctx)
    shown = cols.get("broad", (None,))[0]
    others = [h for c, m, h, _ in metric_columns(ctx.evals) if m.role == "broad" and c != shown and c in ctx.comp]
    return [f"The headline shows {cols['broad'][2]}; comparison.md has {', '.join(others)} beside it."] if others \
        and shown else []


def _read(ctx: ReportContext, row, m: Metric) -> str:
    """', of N answers it scored' for a judge-free metric of one detector (its CI rests on those)."""
    if not judge_free(m) or len(m.rubrics) != 1 or ctx.head is None or m.rubrics[0] not in ctx.head:
        return ""
    rows = ctx.head[(ctx.head["group"] == row["group"]) & (ctx.head["judge"] == row["judge"])]
    return f" of the {int(rows[m.rubrics[0]].notna().sum())} answers {m.rubrics[0]} scored"


def _self_judged(ctx: ReportContext) -> list[str]:
    """The judges that are the tiny local model (a pipeline check, not a measured judge)."""
    tiny = ctx.run.exp.base_model == "tiny"
    return [j for j in ctx.judges if j.endswith("/tiny") or (tiny and j.endswith("/base"))]


def measured_sentence(ctx: ReportContext, cols: dict) -> str | None:
    """Which headline columns are measurements and which are pipeline checks, in one sentence (None: nothing to
    tell apart)."""
    free = [f"the {role} column ({h})" for role, (_, _, h, m) in cols.items()
            if role in ("narrow", "broad") and judge_free(m)]
    judged = [h for role, (_, _, h, m) in cols.items() if role not in ("narrow", "broad") or not judge_free(m)]
    checks = _self_judged(ctx)
    if not checks or not judged:
        return None
    said = ""
    if free:
        said = (f"{free[0]} is a real measurement by a rule-based detector, no judge; " if len(free) == 1 else
                f"{' and '.join(free)} are real measurements by rule-based detectors, no judge; ")
    return (f"Reading this table: {said}{', '.join(judged)} come from {', '.join(checks)}, the tiny local model "
            "judging answers, and are pipeline checks only: they show that the stages run, not a finding.")


def _vs_base_cells(row, col: str, prefix: str) -> dict:
    """The headline's difference from the base model for one column: points with CI, p, MDE."""
    if pd.isna(row.get(f"{col}_vs_base")):
        return {f"{prefix}vs base (pp)": "", f"{prefix}p": "", f"{prefix}MDE (pp)": ""}
    ci = ci_text(100 * row[f"{col}_vs_base_ci_low"], 100 * row[f"{col}_vs_base_ci_high"])
    return {f"{prefix}vs base (pp)": f"{100 * row[f'{col}_vs_base']:+.1f} {ci}",
            f"{prefix}p": p_text(row[f"{col}_vs_base_p"]), f"{prefix}MDE (pp)": _pct(row[f"{col}_vs_base_mde"])}


def headline_table(ctx: ReportContext) -> tuple[pd.DataFrame, list[str]]:
    """The compact headline table and, per row, the address of its answers in the browser."""
    cols = _columns(ctx)
    many = len(ctx.judges) > 1
    has_base = any(c.endswith("_vs_base") for c in ctx.comp)
    rows, links = [], []
    for _, r in ctx.comp.iterrows():
        row = {"organism": r["group"], **({"judge": r["judge"]} if many else {})}
        if "broad" in cols:
            c, cis, header, _ = cols["broad"]
            row[header], row["95% CI"] = _pct(r[c]), _ci(r, cis)
            row.update(_vs_base_cells(r, c, "") if has_base else {})
        if "em" in cols:
            row[cols["em"][2]] = _pct(r[cols["em"][0]])
        if "narrow" in cols:
            c, cis, header, _ = cols["narrow"]
            row[f"narrow: {header}"], row["narrow 95% CI"] = _pct(r[c]), _ci(r, cis)
            row.update(_vs_base_cells(r, c, "narrow ") if has_base else {})
        if "coherent" in cols:
            row[cols["coherent"][2]] = _pct(r[cols["coherent"][0]])
        col, _, header, _ = cols.get("answers", ("n", [], "answers", None))
        row[header] = None if pd.isna(r.get(col)) else int(r[col])
        rows.append(row)
        links.append(answers_link(group=r["group"]))
    return pd.DataFrame(rows, dtype=object), links


def versus_base(ctx: ReportContext, group: str, column: str) -> str:
    """', vs base +3.1 points [-1.2, 7.4], p 0.21 (a rise of 6.2 points or more would have shown)' for a
    headline column, from the paired differences ('' when there is none)."""
    d = ctx.diffs
    if d is None or not len(d):
        return ""
    rows = d[(d["group"] == group) & (d["comparison"] == "vs base") & (d["metric"] == column)
             & (d["judge"] == ctx.judges[0] if "judge" in d else True)]
    if not len(rows):
        return ""
    r = rows.iloc[0]
    text = (f", vs base {r['diff (pp)']:+.1f} points {ci_text(r['diff ci_low'], r['diff ci_high'])}, "
            f"p {p_text(r['p'])}")
    if r["p"] < 0.05:
        return text
    mde = r["mde (pp)"]
    return text + (f" (not significant; a rise of {mde:.1f} points or more would have shown)" if mde == mde else
                   " (not significant; with these answers no rise could have shown)")


def summary(ctx: ReportContext) -> list[str]:
    """One sentence on what was run, then one per organism (first judge) with its headline rates and CIs."""
    exp = ctx.run.exp
    organisms = [f"{o.name} ({' then '.join(f'{p.trainer} on {p.data}' for p in o.phases)})" for o in exp.organisms]
    seeds = ("seed " if len(exp.seeds) == 1 else "seeds ") + ", ".join(str(s) for s in exp.seeds)
    out = [f"Base model {exp.base_model}, fine-tuned into {', '.join(organisms) or 'no organism'}; {seeds}. "
           f"Answers judged by {', '.join(ctx.judges)} ({ctx.run.exp.analysis.convention} convention)."]
    cols = _columns(ctx)
    first = ctx.comp[ctx.comp["judge"] == ctx.judges[0]]
    for _, r in first.iterrows():
        parts = []
        if "broad" in cols:
            c, cis, header, m = cols["broad"]
            among = (" of coherent answers" if m.name == "misaligned_rate" else _read(ctx, r, m)) + \
                (f" ({_label(header)[2:-1]})" if _label(header) else "")
            parts.append(f"{header.replace(_label(header), '').replace(' %', '', 1)} {_pct(r[c])}% {_ci(r, cis)}{among}"
                         f"{versus_base(ctx, r['group'], c)}")
        if "em" in cols:
            label = _label(cols["em"][2])
            parts.append(f"EM {_pct(r[cols['em'][0]])}%"
                         + (f" ({label[2:-1]})" if label and label != _label(cols.get("broad", "  ")[2]) else ""))
        if "narrow" in cols:
            c, cis, header, m = cols["narrow"]
            parts.append(f"narrow ({header}) {_pct(r[c])}% {_ci(r, cis)}{_read(ctx, r, m)}"
                         f"{versus_base(ctx, r['group'], c)}")
        n = r.get(cols.get("answers", ("n",))[0])
        count = "" if n is None or (isinstance(n, float) and math.isnan(n)) else f"; {int(n)} answers"
        out.append(f"{r['group']}: {'; '.join(parts) or 'no headline metric'}{count}.")
    sentence = measured_sentence(ctx, cols)
    return out + ([sentence] if sentence else [])


def headline_figure(ctx: ReportContext) -> tuple[str, str] | None:
    """(caption, SVG file) of the report's first figure: the headline's rate columns with intervals (the judge-free
    ones first), a panel each, a marker per organism (first judge) linking to its answers; None without one."""
    import textwrap

    cols, checks = _columns(ctx), _self_judged(ctx)
    first = ctx.comp[ctx.comp["judge"] == ctx.judges[0]]
    roles = sorted((r for r in ("broad", "narrow") if r in cols and cols[r][1]),
                   key=lambda r: not judge_free(cols[r][3]))
    panels = []
    for role in roles:
        col, cis, header, m = cols[role]
        by = "no judge" if judge_free(m) else f"judge {ctx.judges[0]}" + (
            ": a pipeline check" if ctx.judges[0] in checks else "")
        y, lo, hi = (first[c].to_numpy(dtype=float) * 100 for c in (col, *cis))
        panels.append((textwrap.fill(f"{role}: {header} ({by})", 40), list(first["group"]), y, lo, hi))
    if not panels:
        return None
    svg = plots.headline_plot(panels, ctx.out, link=lambda g: answers_link(group=g))[1]
    free = len(roles) > 1 and judge_free(cols[roles[0]][3])
    return "The headline's columns per organism with their 95% CIs" + (" (the judge-free column first)." if free
                                                                      else "."), svg


def headline_markdown(ctx: ReportContext) -> str:
    """`headline.md`: the summary sentences and the compact table (what `emwb report` and `replicate` print)."""
    table, _ = headline_table(ctx)
    lines = "".join(f"{line}\n\n" for line in summary(ctx))
    return (f"# {ctx.title}\n\n{lines}{markdown(table)}\nEvery table and the detectors' calibration: "
            "comparison.md beside this file; the whole report: index.html.\n")
