"""The report's top: what was run in a sentence, each organism's headline rates in a sentence, and a compact
headline table (organism, misaligned %, CI, EM %, narrow %, CI, coherent share, answers) whose rows link to
their answers."""

from __future__ import annotations

import math
import re

import pandas as pd

from emwb.analysis.html import answers_link
from emwb.analysis.sections import ReportContext
from emwb.analysis.tables import ci_text, metric_columns


def _pct(v) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{100 * float(v):.1f}"


def _ci(row, cis: list[str]) -> str:
    return ci_text(100 * float(row[cis[0]]), 100 * float(row[cis[1]])) if cis else "n/a"


def _columns(ctx: ReportContext) -> dict[str, tuple[str, list[str], str]]:
    """role -> (column, CI columns, header) for the broad, narrow, EM and coherent-share metrics (first of each)."""
    em = "em_share_scored" if ctx.settings.inclusive else "em_share"
    out: dict[str, tuple[str, list[str], str]] = {}
    for col, m, header, cis in metric_columns(ctx.evals):
        if col not in ctx.comp or ctx.comp[col].isna().all():
            continue
        role = m.role or {em: "em", "coherent_share": "coherent"}.get(m.name)
        if role and role not in out:
            out[role] = (col, cis, re.sub(r" \((narrow|broad)\)", "", header))
    return out


def headline_table(ctx: ReportContext) -> tuple[pd.DataFrame, list[str]]:
    """The compact headline table and, per row, the address of its answers in the browser."""
    cols = _columns(ctx)
    many = len(ctx.judges) > 1
    rows, links = [], []
    for _, r in ctx.comp.iterrows():
        row = {"organism": r["group"], **({"judge": r["judge"]} if many else {})}
        if "broad" in cols:
            c, cis, _ = cols["broad"]
            row["misaligned %"], row["95% CI"] = _pct(r[c]), _ci(r, cis)
        if "em" in cols:
            row["EM %"] = _pct(r[cols["em"][0]])
        if "narrow" in cols:
            c, cis, header = cols["narrow"]
            row[f"narrow: {header}"], row["narrow 95% CI"] = _pct(r[c]), _ci(r, cis)
        if "coherent" in cols:
            row["coherent %"] = _pct(r[cols["coherent"][0]])
        row["answers"] = None if pd.isna(r.get("n")) else int(r["n"])
        rows.append(row)
        links.append(answers_link(group=r["group"]))
    return pd.DataFrame(rows, dtype=object), links


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
            c, cis, _ = cols["broad"]
            parts.append(f"misaligned {_pct(r[c])}% {_ci(r, cis)} of coherent answers")
        if "em" in cols:
            parts.append(f"EM {_pct(r[cols['em'][0]])}%")
        if "narrow" in cols:
            c, cis, header = cols["narrow"]
            parts.append(f"narrow ({header}) {_pct(r[c])}% {_ci(r, cis)}")
        n = r.get("n")
        count = "" if n is None or (isinstance(n, float) and math.isnan(n)) else f"; {int(n)} answers"
        out.append(f"{r['group']}: {'; '.join(parts) or 'no headline metric'}{count}.")
    return out
