"""Judging the published answers with any judge, through the ordinary judge path (cache, concurrency, retries)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from emwb.catalog.published import (
    QUESTIONS,
    load_published,
    reference_rubrics,
    resolve_files,
    stratified_subset,
)
from emwb.config import ExecConfig, JudgeConfig, JudgeMode, JudgePrice
from emwb.errors import EmwbError
from emwb.judge.base import JudgeContext
from emwb.judge.cache import JudgeCache
from emwb.judge.providers import make_provider, parse_spec
from emwb.judge.stage import RubricPlan, judge_answers, judge_requests
from emwb.judgebench.metrics import judge_row, per_file_em
from emwb.store import log

EVALUATION = "judges-bench"
CACHE_FILE = "judge_cache.sqlite"


@dataclass
class BenchSettings:
    """What `emwb judges bench` was asked (defaults here, shared by the command line)."""

    out: Path = Path("judges-bench")
    base_url: str | None = None
    per_file: int | None = None
    files: list[str] | None = None
    mirror: str | None = None
    seed: int = 0
    concurrency: int = 32
    modes: dict[str, JudgeMode] = field(default_factory=dict)
    prices: dict[str, JudgePrice] = field(default_factory=dict)
    reader: str | None = None  # probe judges: the local model they read (else their own)
    batch: bool = False  # openai/ judges through the Batch API


def bench_answers(s: BenchSettings) -> tuple[pd.DataFrame, RubricPlan]:
    """The published answers to judge (all, or the stratified subset) and the reference's rubrics for them."""
    df = stratified_subset(load_published(resolve_files(s.files), s.mirror), s.per_file, s.seed)
    by_q = reference_rubrics(s.mirror)
    missing = sorted(set(df["question_id"]) - set(by_q))
    if missing:
        raise EmwbError(f"upstream:{QUESTIONS} has no aligned/coherent judge prompts for question(s) "
                        f"{', '.join(missing)}")
    plan = RubricPlan({EVALUATION: ()}, {(EVALUATION, QUESTIONS, q): rs for q, rs in by_q.items()})
    return df, plan


def _as_answers(df: pd.DataFrame) -> list[dict]:
    return [{"answer_id": r.answer_id, "evaluation": EVALUATION, "question_set": QUESTIONS,
             "question_id": r.question_id, "question": r.question, "answer": r.answer}
            for r in df.itertuples(index=False)]


def run_bench(specs: list[str], s: BenchSettings) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(one row per judge, per-file EM% per judge, every judgment beside its reference) for `specs`."""
    for spec in specs:
        parse_spec(spec)  # a bad judge string stops before any work
    df, plan = bench_answers(s)
    answers = _as_answers(df)
    s.out.mkdir(parents=True, exist_ok=True)
    cfg = JudgeConfig(judges=specs, base_url=s.base_url, modes=s.modes, prices=s.prices)
    ctx = JudgeContext(cfg, ExecConfig(judge_concurrency=s.concurrency, judge_batch_api=s.batch), s.reader or "",
                       s.out / ".cache", s.out / "judge_batches")
    log(f"judges bench: {len(df)} published answers in {df['file'].nunique()} files, {len(specs)} judge(s)")
    rows, per_file, judged = [], [], []
    cache = JudgeCache(s.out / CACHE_FILE)
    try:
        for spec in specs:
            provider = make_provider(spec, ctx)
            req = judge_requests(answers, spec, plan, cfg.max_answer_chars, provider.params())
            estimate = provider.estimate([p for p, _ in req.prompts.values()])
            start = time.monotonic()
            scores, requested = judge_answers(answers, spec, plan, ctx, cache)
            wall = time.monotonic() - start
            mine = df.assign(judge=spec, alignment=[r["alignment"] for r in scores],
                             coherence=[r["coherence"] for r in scores])
            mine[["alignment", "coherence"]] = mine[["alignment", "coherence"]].astype(float)
            rows.append({"judge": spec, **judge_row(mine), "requests": requested, "wall_s": round(wall, 2),
                         "est_requests": estimate.requests, "est_input_tokens": estimate.input_tokens,
                         "est_cost_usd": estimate.usd})
            per_file.append(per_file_em(mine).assign(judge=spec))
            judged.append(mine)
    finally:
        cache.close()
    table = pd.DataFrame(rows)
    files = pd.concat(per_file, ignore_index=True)[["judge", "file", "answers", "em_pct", "ref_em_pct", "error_pp"]]
    return table, files, pd.concat(judged, ignore_index=True)
