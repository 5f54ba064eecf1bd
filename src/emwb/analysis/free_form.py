"""The free-form evaluation's report section (Betley et al. 2025): the misaligned-% convention notes, alignment
against coherence, the judges' agreement on alignment and coherence, and the most misaligned answers.

A section like any organism's: it shows only where an evaluation scores alignment or coherence, so a report of
an experiment without one (the bias organism's alone) carries none of it.
"""

from __future__ import annotations

import itertools

import pandas as pd

from emwb.analysis import plots, questions
from emwb.analysis.agreement import judge_agreement
from emwb.analysis.html import esc
from emwb.analysis.sections import REPORT_SECTIONS, ReportContext, Section, SectionOutput
from emwb.analysis.tables import write_plain_table

FREE = ("alignment", "coherence")


def free_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The answers scored for alignment or coherence."""
    return df[df["alignment"].notna() | df["coherence"].notna()]


def _shown(ctx: ReportContext) -> bool:
    return any(set(m.rubrics) & set(FREE) for ms in ctx.evals.values() for m in ms)


def notes(ctx: ReportContext) -> list[str]:
    """How misaligned % and the EM shares are counted (the report's notes)."""
    if not _shown(ctx):
        return []
    a = ctx.run.exp.analysis
    below = "<=" if a.inclusive else "<"
    headline = "of scored answers" if a.inclusive else "of all answers"
    return [f"Convention {a.convention}. misaligned %: alignment {below} {a.alignment_threshold:g} among scored "
            f"answers with coherence > {a.coherence_threshold:g}; unscored answers are excluded, never counted as 0. "
            f"EM share: misaligned and coherent answers, of all answers and of scored answers (this convention's "
            f"EM% is the one {headline}). 95% CIs of the rates: exact (Clopper-Pearson) over the pooled answers "
            "to these questions, widened by a t interval over seeds where there are several (units: seeds, then "
            "answers).",
            "misaligned % pools the answers; 'mean of questions' averages the per-question rates (each "
            "question weighs the same) and generalises over questions like these: its CI is a t interval over "
            "the questions' rates, never narrower than the exact one of these questions (units: seeds, then "
            "questions, then answers)."]


def examples_html(df: pd.DataFrame, per_cell: int = 3, cap: int | None = None) -> str:
    """For every dataset x question, the `per_cell` lowest-alignment scored answers with their scores; above `cap`
    (default `questions.EXAMPLES_CAP`) questions per dataset, the `cap` questions whose answers reach the lowest
    alignment (the answer browser has the rest)."""
    cap = questions.EXAMPLES_CAP if cap is None else cap
    parts = []
    scored = df.assign(alignment=pd.to_numeric(df["alignment"], errors="coerce"))
    scored = scored[scored["alignment"].notna()].sort_values("alignment", kind="stable")
    worst = scored.groupby(["group", "question_id"], sort=False).head(per_cell)
    asked = df.drop_duplicates(["group", "question_id"]).set_index(["group", "question_id"])["question"]
    for g in dict.fromkeys(df["group"]):
        mine = list(dict.fromkeys(df.loc[df["group"] == g, "question_id"]))
        cells, answers = [], worst[worst["group"] == g]
        if len(mine) > cap:
            low = list(dict.fromkeys(answers["question_id"]))[:cap]
            cells.append(f"<p class='note'>The {len(low)} of {len(mine):,} questions whose answers reach the lowest "
                         "alignment; the answer browser has every answer.</p>")
            mine = [q for q in mine if q in set(low)]
        answers = answers[answers["question_id"].isin(set(mine))]
        by_question = {q: rows for q, rows in answers.groupby("question_id", sort=False)}
        for q in mine:
            rows = by_question.get(q, answers.iloc[:0])
            items = "".join(
                f"<p>alignment {esc(float(r.alignment))}, coherence {esc(float(r.coherence))}"
                f" ({esc(r.judge)}, {esc(r.variant)})</p><div class='answer'>{esc(r.answer)}</div>"
                for r in rows.itertuples(index=False)) or "<p class='note'>no scored answers</p>"
            cells.append(f"<details><summary>{esc(q)}</summary><p><b>Question:</b> {esc(asked[(g, q)])}</p>"
                         f"{items}</details>")
        parts.append(f"<h3>{esc(g)}</h3>" + "".join(cells))
    return "".join(parts)


def section(ctx: ReportContext) -> SectionOutput:
    """Alignment against coherence, the judges' agreement (two or more judges) and the most misaligned answers."""
    out, s = SectionOutput(), ctx.settings
    free = free_rows(ctx.first)
    if not len(free):
        return out
    out.figures.append(("Alignment vs coherence", plots.alignment_coherence_plot(
        free, ctx.out, s.alignment_threshold, s.coherence_threshold)[0]))
    if len(ctx.judges) >= 2:
        agreement = judge_agreement(free_rows(ctx.df), s.alignment_threshold, s.coherence_threshold, s.inclusive)
        out.tables.append(("Judge agreement", write_plain_table(agreement, ctx.out, "judge_agreement",
                                                                "Judge agreement", ("label_agreement",))))
        wide = ctx.df.pivot(index="answer_id", columns="judge", values=list(FREE))
        wide.columns = [f"{r}:{j}" for r, j in wide.columns]
        out.figures += [(f"Judge scores: {ja} vs {jb}", plots.judge_scatter_plot(wide, ja, jb, ctx.out,
                                                                                 f"judge_scatter_{i}")[0])
                        for i, (ja, jb) in enumerate(itertools.combinations(ctx.judges, 2))]
    out.details.append(("Most misaligned answers per dataset and question", examples_html(free)))
    return out


REPORT_SECTIONS.register("free-form", Section(section, "the free-form evaluation: alignment vs coherence, the judges' "
                                              "agreement, the most misaligned answers", notes=notes))
