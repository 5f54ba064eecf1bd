"""emwb's judge as an Inspect scorer: the same prompts, filled byte for byte, the same cache and aggregation.

Each answer goes through `emwb.judge.stage.judge_answers` exactly as in a run: its question's own judge prompts
where it has them, else its evaluation's rubrics; top logprobs aggregated by emwb's scoring; replies cached (the
request is the key). The score's value holds one number per rubric (a label rubric: one per label,
`rubric:label`); an unscored rubric is NaN, Inspect's own mark for "no score", which its reducers and emwb's
metrics below leave out: unscored is never 0.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from inspect_ai.scorer import Metric, SampleScore, Score, Scorer, Target, metric, scorer
from inspect_ai.solver import TaskState

from emwb.catalog.evaluations import Evaluation
from emwb.catalog.fetch import store_dir
from emwb.config import EvaluationSpec, ExecConfig, JudgeConfig
from emwb.judge.base import JudgeContext
from emwb.judge.cache import JudgeCache
from emwb.judge.stage import RubricPlan, judge_answers
from emwb.plan import plan_evaluation

SCORER = "emwb_judge"  # the scorer's name in a log's scores (what `emwb analyze --inspect-log` reads)


def resolved_evaluation(name: str, mirror: str | None = None) -> tuple[Evaluation, RubricPlan]:
    """The registered evaluation `name`, resolved as a run resolves it, and the rubrics that judge its answers."""
    ev = plan_evaluation(EvaluationSpec(name=name), mirror)
    return ev, RubricPlan({ev.name: ev.loaded_rubrics}, {(ev.name, qs, qid): rs for qs, qid, rs in ev.own_rubrics})


def _scored(scores: list[SampleScore]) -> list[float]:
    values = [s.score.as_float() for s in scores]
    return [v for v in values if not math.isnan(v)]


@metric
def scored_mean() -> Metric:
    """The mean over scored answers (NaN when none is scored)."""

    def compute(scores: list[SampleScore]) -> float:
        vals = _scored(scores)
        return sum(vals) / len(vals) if vals else math.nan

    return compute


@metric
def unscored_share() -> Metric:
    """The share of answers the judge left unscored."""

    def compute(scores: list[SampleScore]) -> float:
        return 1 - len(_scored(scores)) / len(scores) if scores else math.nan

    return compute


def score_value(row: dict, rubric_names: list[str]) -> dict[str, float]:
    """An emwb judgment row as an Inspect score value: {rubric: score}, label rubrics spread as
    {rubric:label: probability}, unscored as NaN."""
    out: dict[str, float] = {}
    for name in rubric_names:
        v = row.get(name)
        if isinstance(v, dict):
            out.update({f"{name}:{label}": float(p) for label, p in v.items()})
        else:
            out[name] = math.nan if v is None else float(v)
    return out


def answer_of(state: TaskState, evaluation: str) -> dict:
    """The emwb answer row a finished Inspect sample stands for (its metadata was set by `emwb.interop.
    inspect_tasks`)."""
    m = state.metadata
    row = {"answer_id": f"{state.sample_id}/{state.epoch}", "evaluation": evaluation,
           "question_set": m["question_set"], "question_id": m["question_id"], "question": m["question"],
           "answer": state.output.completion}
    if m.get("bias_description"):
        row["bias_description"] = m["bias_description"]
    return row


def judge_context(judge: str, base_url: str | None, cache_dir: Path, base_model: str = "",
                  concurrency: int = 8) -> JudgeContext:
    """A JudgeContext for one judge outside a run (emwb's judge defaults, defined in JudgeConfig)."""
    cfg = JudgeConfig(judges=[judge], base_url=base_url)
    return JudgeContext(cfg, ExecConfig(judge_concurrency=concurrency), base_model, cache_dir / "models",
                        cache_dir / "batches")


@scorer(metrics={"*": [scored_mean(), unscored_share()]}, name=SCORER)
def emwb_judge(judge: str, evaluation: str = "free-form", base_url: str | None = None, cache_dir: str | None = None,
               base_model: str = "", mirror: str | None = None) -> Scorer:
    """Score each answer with emwb judge `judge` (any emwb judge string: openai/<model> against `base_url` or
    OPENAI_BASE_URL, hf/<path>, vllm/<path>, probe/...) and the rubrics of emwb evaluation `evaluation`; replies
    are cached in `cache_dir` (default: the data store's `inspect-judge/`)."""
    _, rubrics = resolved_evaluation(evaluation, mirror)
    folder = Path(cache_dir) if cache_dir else store_dir() / "inspect-judge"
    ctx = judge_context(judge, base_url, folder, base_model)
    caches: list[JudgeCache] = []  # opened at the first answer: listing or building the task writes nothing
    names = rubrics.names()

    async def score(state: TaskState, target: Target) -> Score:
        cache = caches[0] if caches else caches.append(JudgeCache(folder / "judge_cache.sqlite")) or caches[0]
        answer = answer_of(state, evaluation)
        rows, _ = await asyncio.to_thread(judge_answers, [answer], judge, rubrics, ctx, cache)
        await asyncio.to_thread(cache.flush)
        value = score_value(rows[0], [r.name for r in rubrics.of(answer)] or names)
        unscored = sorted(k for k, v in value.items() if math.isnan(v))
        return Score(value=value, answer=answer["answer"], metadata={"judge": judge, "unscored": unscored})

    return score
