"""Per-question parts at scale: which questions the per-question table, its tests, its figure and the examples
show when an evaluation has many (a 20,000-question set), and every question's counts in one CSV.

Up to `TABLE_CAP` questions per evaluation the per-question table holds them all, as before. Above it, the
questions are ranked by how far an organism's rate on them is from the base model's (the evaluation's first
broad rate, else its first narrow one; without a base row, the spread between organisms), computed at once
from the per-answer counts; the table (every metric, exact intervals), its paired tests against base and the
figure (its first `FIGURE_CAP`) hold the first `TABLE_CAP`, and `per_question_all.csv` holds every question's
counts and rates. The Benjamini-Hochberg correction of the table's tests counts every question's cells, those
left out with p = 1, so it is never looser than testing them all. The answer browser has every answer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emwb.analysis.metrics import Metric, Settings, column_names

TABLE_CAP = 100    # questions per evaluation in the per-question table and its tests
FIGURE_CAP = 20    # questions per evaluation in the per-question figure
EXAMPLES_CAP = 30  # questions per organism in the most-misaligned examples

BASE = "base"


def cell_rates(df: pd.DataFrame, m: Metric, s: Settings, by: str = "question_id") -> pd.DataFrame:
    """Rate metric `m` per (group, `by` value) from its per-answer counts, computed at once: columns num, den and
    rate (NaN where the cell has no answer with every rubric of `m` scored, or no denominator: n/a, never 0)."""
    got = m.rate.counts(df, s) if m.rate is not None and len(df) else None
    if got is None:
        return pd.DataFrame(columns=["group", by, "num", "den", "rate"])
    rubrics = [r for r in m.rubrics if r in df]
    scored = df[rubrics].notna().all(axis=1).to_numpy() if rubrics else np.zeros(len(df), bool)
    cells = pd.DataFrame({"group": df["group"].to_numpy(), by: df[by].to_numpy(), "num": got[0], "den": got[1],
                          "scored": scored.astype(int)}).groupby(["group", by], sort=False).sum().reset_index()
    ok = (cells["den"] > 0) & (cells["scored"] > 0)
    cells["rate"] = np.where(ok, cells["num"] / cells["den"].where(ok, 1), np.nan)
    return cells.drop(columns="scored")


def ranking_metric(ms: list[Metric]) -> Metric | None:
    """The rate the questions are ranked by: the first broad one, else the first narrow one."""
    rates = [m for m in ms if m.rate is not None]
    return next((m for role in ("broad", "narrow") for m in rates if m.role == role), None)


def ranked_questions(df: pd.DataFrame, ms: list[Metric], s: Settings) -> list[str]:
    """The evaluation's questions (of `df`, one evaluation's answers), the largest difference from base first
    (without a base row: the largest spread between organisms); questions with no difference last, in order."""
    questions = list(dict.fromkeys(df["question_id"]))
    m = ranking_metric(ms)
    if m is None or not questions:
        return questions
    rates = cell_rates(df, m, s).pivot(index="question_id", columns="group", values="rate").reindex(questions)
    if BASE in rates and len(rates.columns) > 1:
        gap = rates.drop(columns=BASE).sub(rates[BASE], axis=0).abs().max(axis=1)
    else:
        gap = rates.max(axis=1) - rates.min(axis=1)
    order = np.lexsort((np.arange(len(questions)), -gap.fillna(-1).to_numpy()))
    return [questions[i] for i in order]


def capped(df: pd.DataFrame, evaluations: dict[str, list[Metric]], s: Settings) -> tuple[pd.DataFrame, dict]:
    """(the answers of the questions the per-question table shows, {evaluation: (shown, every question)}): every
    question up to TABLE_CAP, else the first TABLE_CAP ranked, their answers in rank order."""
    keep, found = [], {}
    for ev, ms in evaluations.items():
        sub = df[df["evaluation"] == ev]
        every = list(dict.fromkeys(sub["question_id"]))
        if len(every) <= TABLE_CAP:
            keep.append(sub)
            found[ev] = (every, every)
            continue
        shown = ranked_questions(sub, ms, s)[:TABLE_CAP]
        rank = {q: i for i, q in enumerate(shown)}
        mine = sub[sub["question_id"].isin(rank)]
        keep.append(mine.iloc[np.argsort(mine["question_id"].map(rank).to_numpy(), kind="stable")])
        found[ev] = (shown, every)
    return (pd.concat(keep) if keep else df.iloc[:0]), found


def untested_cells(found: dict, evaluations: dict[str, list[Metric]], groups: list[str]) -> int:
    """Cells of the questions left out of the table that its tests would have had (counted with p = 1)."""
    others = len([g for g in groups if g != BASE]) if BASE in groups else 0
    return sum((len(every) - len(shown)) * others * sum(m.rate is not None and m.role in ("narrow", "broad")
                                                       for m in evaluations[ev])
               for ev, (shown, every) in found.items())


def all_questions(df: pd.DataFrame, evaluations: dict[str, list[Metric]], s: Settings) -> pd.DataFrame:
    """Every (organism, evaluation, question): answers, and each rate metric's numerator, denominator and rate in %
    (per_question_all.csv)."""
    names, frames = column_names(evaluations), []
    for ev, ms in evaluations.items():
        sub = df[df["evaluation"] == ev]
        out = sub.groupby(["group", "question_id"], sort=False).size().rename("answers").reset_index()
        for m in (m for m in ms if m.rate is not None):
            col = names[(ev, m.name)]
            rates = cell_rates(sub, m, s).rename(columns={"num": f"{col} num", "den": f"{col} den", "rate": col})
            rates[col] = rates[col] * 100
            out = out.merge(rates, on=["group", "question_id"], how="left")
        frames.append(out.assign(evaluation=ev))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return table[["group", "evaluation", *[c for c in table if c not in ("group", "evaluation")]]]


def note(found: dict, evaluations: dict[str, list[Metric]]) -> list[str]:
    """One line per evaluation whose per-question parts are capped."""
    out = []
    for ev, (shown, every) in found.items():
        if len(shown) < len(every):
            m = ranking_metric(evaluations[ev])
            out.append(f"Per question ({ev}): {len(every):,} questions; the table, its tests against base and the "
                       f"figure (its first {FIGURE_CAP}) show the {len(shown)} whose {m.header if m else 'rate'} "
                       "differs most from the base model's; per_question_all.csv has every question's counts and "
                       "rates, the answer browser every answer. The tests' Benjamini-Hochberg correction counts "
                       "the questions left out with p = 1.")
    return out
