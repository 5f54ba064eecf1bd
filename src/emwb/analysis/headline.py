"""The report's top: what was run in a sentence, each organism's headline rates in a sentence, and a compact
headline table (organism, the broad rate (misaligned % for the free-form evaluation), CI, EM %, narrow %, CI,
coherent share, answers) whose rows link to their answers."""

from __future__ import annotations

import math
import re

import pandas as pd

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
    """role -> (column, CI columns, header, metric) for the broad, narrow, EM and coherent-share metrics (the first
    of each with values; the narrow one as `_narrow_rank` orders them)."""
    em = "em_share_scored" if ctx.settings.inclusive else "em_share"
    out: dict[str, tuple[str, list[str], str, Metric]] = {}
    found = [(col, m, header, cis) for col, m, header, cis in metric_columns(ctx.evals)
             if col in ctx.comp and not ctx.comp[col].isna().all()]
    for col, m, header, cis in sorted(found, key=lambda f: _narrow_rank(ctx, f[1]) if f[1].role == "narrow" else 0):
        role = m.role or {em: "em", "coherent_share": "coherent"}.get(m.name)
        if role and role not in out:
            out[role] = (col, cis, re.sub(r" \((narrow|broad)\)|(?<=\()(narrow|broad), ", "", header), m)
    return out


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
            row["EM %"] = _pct(r[cols["em"][0]])
        if "narrow" in cols:
            c, cis, header, _ = cols["narrow"]
            row[f"narrow: {header}"], row["narrow 95% CI"] = _pct(r[c]), _ci(r, cis)
            row.update(_vs_base_cells(r, c, "narrow ") if has_base else {})
        if "coherent" in cols:
            row["coherent %"] = _pct(r[cols["coherent"][0]])
        row["answers"] = None if pd.isna(r.get("n")) else int(r["n"])
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
            among = " of coherent answers" if m.name == "misaligned_rate" else _read(ctx, r, m)
            parts.append(f"{header.replace(' %', '', 1)} {_pct(r[c])}% {_ci(r, cis)}{among}"
                         f"{versus_base(ctx, r['group'], c)}")
        if "em" in cols:
            parts.append(f"EM {_pct(r[cols['em'][0]])}%")
        if "narrow" in cols:
            c, cis, header, m = cols["narrow"]
            parts.append(f"narrow ({header}) {_pct(r[c])}% {_ci(r, cis)}{_read(ctx, r, m)}"
                         f"{versus_base(ctx, r['group'], c)}")
        n = r.get("n")
        count = "" if n is None or (isinstance(n, float) and math.isnan(n)) else f"; {int(n)} answers"
        out.append(f"{r['group']}: {'; '.join(parts) or 'no headline metric'}{count}.")
    sentence = measured_sentence(ctx, cols)
    return out + ([sentence] if sentence else [])


def headline_markdown(ctx: ReportContext) -> str:
    """`headline.md`: the summary sentences and the compact table (what `emwb report` and `replicate` print)."""
    table, _ = headline_table(ctx)
    lines = "".join(f"{line}\n\n" for line in summary(ctx))
    return (f"# {ctx.title}\n\n{lines}{markdown(table)}\nEvery table and the detectors' calibration: "
            "comparison.md beside this file; the whole report: index.html.\n")
