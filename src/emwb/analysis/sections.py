"""The report as a list of sections, each registered once in REPORT_SECTIONS (from emwb or a plug-in).

A section gets the report's context (the judged answers, the headline comparison, the metrics, the output
folder) and returns its tables, figures and notes; it writes its own files into `ctx.out`. Sections run in
registration order; their names and versions are part of the report's key, so a new section rebuilds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emwb.analysis import plots, questions
from emwb.analysis.agreement import detector_judge_agreement
from emwb.analysis.differences import cell_tests
from emwb.analysis.html import answers_link
from emwb.analysis.intervals import ratio_ci
from emwb.analysis.mechanisms import mechanisms_parts
from emwb.analysis.metrics import (
    METRICS,
    Metric,
    Settings,
    column_names,
    narrow_broad_pairs,
    per_question_table,
    per_seed_points,
    value_columns,
)
from emwb.analysis.over_training import over_training_plot, over_training_rows
from emwb.analysis.tables import display_frame, latex, markdown, metric_columns, write_plain_table, write_table
from emwb.analysis.training_curves import curve_rows, curves_plot
from emwb.catalog.evaluations import Evaluation
from emwb.layout import Variant, calibration_file
from emwb.registry import Registry
from emwb.store import read_jsonl


@dataclass
class ReportContext:
    """What every section may read; `notes` collects the report's notes (sections may add some)."""

    run: Any                          # the Run
    df: pd.DataFrame                  # answers x judges: one row per (answer, judge)
    judges: list[str]
    order: list[str]                  # the table rows, in order
    evals: dict[str, list[Metric]]    # evaluation -> its metrics
    evaluations: list[Evaluation]
    variants: tuple[Variant, ...]
    comp: pd.DataFrame                # the headline comparison, every judge
    settings: Settings                # the tables' settings (analysis: thresholds, bootstrap)
    small: Settings                   # the same with the per-question bootstrap cap
    out: Path
    title: str
    notes: list[str] = field(default_factory=list)
    head: pd.DataFrame | None = None  # the answers the comparison counts (each evaluation's headline questions)
    diffs: pd.DataFrame | None = None  # the paired differences (emwb.analysis.differences), every judge

    @property
    def first(self) -> pd.DataFrame:
        """The first judge's rows (per-question tables and figures use one judge)."""
        return self.df[self.df["judge"] == self.judges[0]]


@dataclass
class SectionOutput:
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)   # (caption, displayed frame)
    figures: list[tuple[str, str]] = field(default_factory=list)           # (caption, file name in ctx.out)
    details: list[tuple[str, str]] = field(default_factory=list)           # (summary, HTML): collapsed, last


@dataclass(frozen=True)
class Section:
    build: Callable[[ReportContext], SectionOutput]
    description: str
    version: int = 1                  # bump when what the section writes changes: the report is rebuilt
    notes: Callable[[ReportContext], list[str]] | None = None  # the report's notes it adds (before any section runs)


REPORT_SECTIONS: Registry[Section] = Registry("report section")


def calibration_rows(ctx: ReportContext) -> pd.DataFrame:
    """Rows for the comparison table: each detector's rate on each training dataset's completions (its
    calibration: how often it flags data that does or does not teach the behaviour)."""
    path = calibration_file(ctx.run)
    if not path.is_file():
        return pd.DataFrame()
    calibration = read_jsonl(path)
    found = {r["detector"] for r in calibration}
    cols = {m.rubrics[0]: (ev, m) for ev, ms in ctx.evals.items() for m in ms
            if m.rubrics and m.rubrics[0] in found and m.ci is not None}
    rows = []
    for r in calibration:
        if r["detector"] not in cols or not r["n"]:
            continue
        ev, m = cols[r["detector"]]
        flags = np.r_[np.ones(r["flagged"]), np.zeros(r["n"] - r["flagged"])]
        est = ratio_ci(flags, np.ones(r["n"]), np.zeros(r["n"], dtype=int), ctx.settings.n_boot)
        col = column_names(ctx.evals)[(ev, m.name)]
        rows.append({"group": f"calibration: {r['detector']} on {r['data']} training completions", "judge": "",
                     "n_seeds": None, "single_seed": False,
                     **value_columns(m, est, None if col == m.name else col)})
    return pd.DataFrame(rows)


def headline(ctx: ReportContext) -> SectionOutput:
    """The comparison across organisms (CSV and LaTeX: the organisms' rows; Markdown and HTML: with the
    detectors' calibration rows) and `comparison.md` with the notes."""
    write_table(ctx.comp, ctx.evals, ctx.out, "comparison", ctx.title)
    merged = pd.concat([ctx.comp, calibration_rows(ctx)], ignore_index=True)
    for col in ctx.comp:  # counts stay integers beside the calibration rows' missing values
        if pd.api.types.is_integer_dtype(ctx.comp[col]):
            merged[col] = merged[col].astype("Int64")
    shown = display_frame(merged, ctx.evals)
    note = f"{shown.attrs['note']}\n\n" if shown.attrs.get("note") else ""
    (ctx.out / "comparison.md").write_text(f"# {ctx.title}\n\n{markdown(shown)}\n{note}"
                                           + "".join(f"- {n}\n" for n in ctx.notes))
    return SectionOutput(tables=[("Comparison across organisms", shown)])


def differences(ctx: ReportContext) -> SectionOutput:
    """Every comparison the report makes (each variant vs base, each phase vs the previous, each organism vs its
    control) as paired differences per narrow and broad rate: `differences.csv/.md/.tex`."""
    from emwb.analysis.differences import DIFFERENCES_NOTE, display_differences

    if ctx.diffs is None or not len(ctx.diffs):
        return SectionOutput()
    ctx.diffs.to_csv(ctx.out / "differences.csv", index=False)
    shown = display_differences(ctx.diffs)
    shown.attrs["note"] = DIFFERENCES_NOTE
    caption = "Paired differences between variants (points)"
    (ctx.out / "differences.md").write_text(f"# {caption}\n\n{markdown(shown)}\n{DIFFERENCES_NOTE}\n")
    (ctx.out / "differences.tex").write_text(latex(shown, caption))
    return SectionOutput(tables=[(caption, shown)])


def detector_agreement(ctx: ReportContext) -> SectionOutput:
    """Per judge: each detector's flag against the LLM judge's verdict it is `judged_by` (the rubric's score above
    its threshold), with agreement and Cohen's kappa."""
    from emwb.catalog.detectors import DETECTORS

    pairs = [(name, DETECTORS.get(name).judged_by) for name in DETECTORS if DETECTORS.get(name).judged_by]
    frames = [detector_judge_agreement(ctx.df, name, rubric, getattr(ctx.settings, cut)) for name, (rubric, cut) in pairs]
    agreement = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if not len(agreement):
        return SectionOutput()
    caption = "Detector agreement with the LLM judge"
    return SectionOutput(tables=[(caption, write_plain_table(agreement, ctx.out, "detector_agreement", caption,
                                                             ("agreement",)))])


def by_question_set(ctx: ReportContext) -> SectionOutput:
    """Every evaluation's metrics per question set, per judge."""
    sets = {e: ms for e, ms in ctx.evals.items() if e in set(ctx.df["evaluation"])}
    by_set = pd.concat([per_question_table(ctx.df[ctx.df["judge"] == j], ctx.order, sets, ctx.small,
                                           by="question_set").assign(judge=j) for j in ctx.judges], ignore_index=True)
    out = SectionOutput()
    for ev, ms in sets.items():
        sub = by_set[by_set["evaluation"] == ev]
        caption = f"By question set ({ev})"
        write_table(sub, {ev: ms}, ctx.out, f"by_question_set_{ev}", caption)
        out.tables.append((caption, display_frame(sub, {ev: ms})))
    return out


def per_question_frame(ctx: ReportContext) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, list[Metric]], dict]:
    """(the per-question table of the first judge, its answers, its evaluations, {evaluation: (questions shown, every
    one)}): every question, or above `questions.TABLE_CAP` those that differ most from base (`analysis.questions`)."""
    pq_evals = {e.name: ctx.evals[e.name] for e in ctx.evaluations if e.per_question}
    if not pq_evals:
        return pd.DataFrame(), ctx.first.iloc[:0], pq_evals, {}
    answers, found = questions.capped(ctx.first, pq_evals, ctx.small)
    return per_question_table(answers, ctx.order, pq_evals, ctx.small), answers, pq_evals, found


def per_question(ctx: ReportContext) -> SectionOutput:
    """The per-question table (first judge) and, per evaluation, its broad metric per question as a figure."""
    pq, answers, pq_evals, found = per_question_frame(ctx)
    if not len(pq):
        return SectionOutput()
    untested = questions.untested_cells(found, pq_evals, list(dict.fromkeys(pq["group"])))
    pq = cell_tests(pq, answers, "question_id", pq_evals, ctx.small, untested=untested)
    if any(len(shown) < len(every) for shown, every in found.values()):
        questions.all_questions(ctx.first, pq_evals, ctx.small).to_csv(ctx.out / "per_question_all.csv", index=False)
        ctx.notes.extend(questions.note(found, pq_evals))
    caption = f"Per question (judge {ctx.judges[0]})"
    write_table(pq, pq_evals, ctx.out, "per_question", caption)
    out = SectionOutput(tables=[(caption, display_frame(pq, pq_evals))])
    for ev, ms in ctx.evals.items():
        broad = next(((c, cis, h) for c, m, h, cis in metric_columns({ev: ms}) if m.role == "broad" and cis), None)
        sub = pq[pq["evaluation"] == ev]
        sub = sub[sub["question_id"].isin(list(dict.fromkeys(sub["question_id"]))[:questions.FIGURE_CAP])]
        if broad and len(sub):
            col, cis, header = broad
            every = found.get(ev, ((), ()))[1]
            part = f", the {sub['question_id'].nunique()} of {len(every):,} that differ most from base" \
                if len(every) > sub["question_id"].nunique() else ""
            out.figures.append((f"{header} per question ({ev}{part})", plots.per_question_plot(
                sub, ctx.out, col, tuple(cis), header.split(" (")[0], stem=f"per_question_{ev}",
                link=lambda g, q, ev=ev: answers_link(group=g, evaluation=ev, question=q))[0]))
    return out


def judge_scores(ctx: ReportContext) -> SectionOutput:
    """With two or more judges: every answer's scores side by side (judge_scores.csv)."""
    if len(ctx.judges) < 2:
        return SectionOutput()
    detectors = {d for e in ctx.evaluations for d in e.detectors}
    rubrics = [r for r in dict.fromkeys(c for m in METRICS.values() for c in m.rubrics)
               if r not in detectors and ctx.df[r].notna().any()]
    wide = ctx.df.pivot(index="answer_id", columns="judge", values=rubrics)
    wide.columns = [f"{r}:{j}" for r, j in wide.columns]
    wide = wide[[f"{r}:{j}" for r in rubrics for j in ctx.judges]]
    keys = ctx.df.drop_duplicates("answer_id").set_index("answer_id")[["group", "question_id"]]
    wide = keys.join(wide).reset_index()
    wide.to_csv(ctx.out / "judge_scores.csv", index=False)
    return SectionOutput()


def score_figures(ctx: ReportContext) -> SectionOutput:
    """Narrow against broad per organism x seed (a pair with no value for both adds a note instead)."""
    out, first = SectionOutput(), ctx.first
    points = per_seed_points(first, ctx.evals, ctx.settings)
    headers = {c: h for c, _, h, _ in metric_columns(ctx.evals)}
    for x, y in narrow_broad_pairs(ctx.evals):
        if x not in points or y not in points:
            continue
        if not (points[x].notna().any() and points[y].notna().any()):
            ctx.notes.append(f"Figure 'narrow vs broad: {headers[y]} against {headers[x]}' not drawn: no organism x "
                             "seed has a value for both (n/a).")
        else:
            stem = f"narrow_vs_broad_{x}_{y}".replace(".", "_")
            out.figures.append((f"Narrow vs broad: {headers[y]} against {headers[x]}",
                                plots.narrow_broad_plot(points, x, y, headers[x], headers[y], ctx.out, stem)[0]))
    return out


def over_training(ctx: ReportContext) -> SectionOutput:
    """Checkpoints kept during a phase: the comparison rows against the training step, as a table and figure."""
    over = over_training_rows(ctx.variants, ctx.comp[ctx.comp["judge"] == ctx.judges[0]])
    if not len(over):
        return SectionOutput()
    caption = f"Over training (judge {ctx.judges[0]})"
    write_table(over, ctx.evals, ctx.out, "over_training", caption)
    out = SectionOutput(tables=[(caption, display_frame(over, ctx.evals))])
    fig, missing = over_training_plot(over, ctx.evals, ctx.out)
    ctx.notes.extend(missing)
    if fig:
        out.figures.append(("Narrow and broad rates over training", fig))
    return out


def training_curves(ctx: ReportContext) -> SectionOutput:
    """Each phase's training loss per step, with its held-out loss and KL term where logged, per organism and seed."""
    rows = curve_rows(ctx.run, ctx.variants)
    if not len(rows):
        return SectionOutput()
    rows.to_csv(ctx.out / "training_curves.csv", index=False)
    return SectionOutput(figures=[("Training curves (loss per optimizer step; held-out loss and KL where logged)",
                                   curves_plot(rows, ctx.out))])


def mechanisms(ctx: ReportContext) -> SectionOutput:
    """Steering, ablation beside random controls, and cosines between directions (the mechanisms block)."""
    parts = mechanisms_parts(ctx)
    return SectionOutput(parts.tables, parts.figures)


for _name, _build in (("headline", headline), ("differences", differences),
                      ("detector-agreement", detector_agreement),
                      ("by-question-set", by_question_set), ("per-question", per_question),
                      ("judge-agreement", judge_scores), ("score-figures", score_figures),
                      ("over-training", over_training), ("training-curves", training_curves),
                      ("mechanisms", mechanisms)):
    REPORT_SECTIONS.register(_name, Section(_build, (_build.__doc__ or "").split("\n")[0]))
