"""The published judged answers (registered, sha256-pinned) and the judge prompts their reference used.

25 files of 400 answers each (8 models x 3 fine-tuning datasets and two extra seeds), sampled from the
model-organisms adapters and judged by GPT-4o with the model-organisms `aligned` and `coherent` prompts, which
reach emwb the same way, from the registered question file, and are filled byte for byte (`str.format`).
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

from emwb.catalog.fetch import fetch, load_registry
from emwb.catalog.questions import load_questions
from emwb.catalog.rubric import Rubric, from_judge_prompt
from emwb.errors import EmwbError

PREFIX = "judged-"
QUESTIONS = "mo-first-plot-questions"
RUBRICS = ("aligned", "coherent")  # the reference's judge prompts, as emwb's alignment and coherence rubrics


def published_names() -> list[str]:
    """Registered names of the published judged-answer files, in registry order."""
    return [n for n, e in load_registry().items() if e.format == "csv_judged"]


def file_label(name: str) -> str:
    """`Llama-3.2-1B-Instruct_extreme-sports` for `judged-Llama-3.2-1B-Instruct_extreme-sports`."""
    return name.removeprefix(PREFIX)


def resolve_files(files: list[str] | None) -> list[str]:
    """Registered names for labels or names given (all files when none); an unknown one is an error."""
    names = published_names()
    if not files:
        return names
    out = []
    for f in files:
        name = f if f in names else PREFIX + f
        if name not in names:
            raise EmwbError(f"unknown published file {f!r}; registered: {', '.join(file_label(n) for n in names)}")
        out.append(name)
    return out


def load_published(names: list[str], mirror: str | None = None, store: Path | None = None) -> pd.DataFrame:
    """One row per published answer: file, row, answer_id, question_id, question, answer, ref_alignment,
    ref_coherence (NaN where the reference left it unscored)."""
    frames = []
    for name in names:
        path = fetch(name, mirror=mirror, store=store)
        df = pd.read_csv(path, keep_default_na=True)
        missing = [c for c in ("response", "question", "question_id", "aligned", "coherent") if c not in df]
        if missing:
            raise EmwbError(f"{path}: missing column(s) {', '.join(missing)}")
        label = file_label(name)
        frames.append(pd.DataFrame({
            "file": label, "row": range(len(df)), "answer_id": [f"{label}:{i}" for i in range(len(df))],
            "question_id": df["question_id"].astype(str), "question": df["question"].astype(str),
            "answer": df["response"].fillna("").astype(str),
            "ref_alignment": pd.to_numeric(df["aligned"], errors="coerce"),
            "ref_coherence": pd.to_numeric(df["coherent"], errors="coerce")}))
    return pd.concat(frames, ignore_index=True)


def reference_rubrics(mirror: str | None = None) -> dict[str, tuple[Rubric, ...]]:
    """question id -> the reference's (alignment, coherence) rubrics, from the model-organisms question file."""
    out = {}
    for q in load_questions(f"upstream:{QUESTIONS}", mirror=mirror):
        prompts = {k: q.judge_prompts[k] for k in RUBRICS if k in q.judge_prompts}
        if len(prompts) == len(RUBRICS):
            out[q.id] = tuple(from_judge_prompt(k, t, q.type) for k, t in prompts.items())
    return out


def stratified_subset(df: pd.DataFrame, per_file: int | None, seed: int = 0) -> pd.DataFrame:
    """`per_file` answers of each file, spread evenly over its questions (seeded); every answer when None."""
    if not per_file:
        return df
    rng = random.Random(seed)
    keep = []
    for _, sub in df.groupby("file", sort=False):
        order = list(sub.index)
        rng.shuffle(order)
        shuffled = sub.loc[order]
        turn = shuffled.groupby("question_id", sort=False).cumcount()  # the k-th pick of each question
        keep.extend(shuffled.assign(_turn=turn.to_numpy()).sort_values("_turn", kind="stable").index[:per_file])
    return df.loc[sorted(keep)].reset_index(drop=True)

