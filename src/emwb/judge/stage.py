"""Stage `judge`: score every variant's answers with every judge -> `judgments/<judge>/<variant>/`.

Each answer is judged with its question's own judge prompts where it has them (the upstream files), else
with the rubrics of its evaluation. Rows: answer_id, judge, one column per rubric (a float; for a categorical
prompt a {label: probability} mapping; null when unscored). Replies are cached in `judge_cache.sqlite` as
they arrive, so a re-run pays for nothing already judged, and only variants whose judgments are missing or
stale are judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emwb.catalog.rubric import Rubric
from emwb.config import config_hash
from emwb.judge.base import JudgeContext
from emwb.judge.cache import JudgeCache, cache_key
from emwb.judge.providers import make_provider
from emwb.judge.scoring import label_probabilities, score_from_logprobs, yes_probability
from emwb.layout import (
    JUDGMENTS_FILE,
    answers_dir,
    answers_file,
    base_model_path,
    cache_root,
    finished_key,
    judge_batches_dir,
    judge_cache_path,
    judgments_dir,
    judgments_file,
)
from emwb.stages import JUDGE, SAMPLE, Produced
from emwb.store import Artifact, Run, log, now, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from emwb.context import StageContext
    from emwb.plan import Plan


@dataclass(frozen=True)
class RubricPlan:
    """Which rubrics judge an answer: its question's own judge prompts, else its evaluation's rubrics."""

    by_evaluation: dict[str, tuple[Rubric, ...]]
    by_question: dict[tuple[str, str, str], tuple[Rubric, ...]]  # (evaluation, question set, question id)

    def of(self, answer: dict) -> tuple[Rubric, ...]:
        key = (answer["evaluation"], answer.get("question_set"), answer["question_id"])
        return self.by_question.get(key) or self.by_evaluation[answer["evaluation"]]

    def names(self) -> list[str]:
        every = [*self.by_evaluation.values(), *self.by_question.values()]
        return list(dict.fromkeys(r.name for rs in every for r in rs))

    def scored(self) -> set[str]:
        """The names of the rubrics scored 0..100 (not labels, not yes/no)."""
        every = [*self.by_evaluation.values(), *self.by_question.values()]
        return {r.name for rs in every for r in rs if r.kind == "score_0_100"}

    def fingerprint(self) -> dict:
        """What the judgments depend on: each rubric's name, kind and template hash, per evaluation."""
        out: dict[str, list] = {}
        for ev, rs in self.by_evaluation.items():
            out[ev] = [(r.name, r.version, config_hash(r.template)) for r in rs]
        for (ev, qs, qid), rs in sorted(self.by_question.items()):
            out[f"{ev}/{qs}/{qid}"] = [(r.name, r.kind, config_hash(r.template)) for r in rs]
        return out


def rubrics_of(plan: Plan) -> RubricPlan:
    """The rubrics of every evaluation and question, from the run plan."""
    by_ev, by_q = {}, {}
    for e in plan.evaluations:
        by_ev[e.name] = e.loaded_rubrics
        for qs, qid, rs in e.own_rubrics:
            by_q[(e.name, qs, qid)] = rs
    return RubricPlan(by_ev, by_q)


def _score(r: Rubric, top: dict[str, float], min_mass: float, strict: bool = False):
    """A rubric's score from a reply's {token: logprob}; `strict` (written replies): a label must be whole."""
    if r.kind == "label":
        return label_probabilities(top, r.labels, min_mass, strict)
    if r.kind == "yes_no":
        return yes_probability(top, min_mass, strict)
    return score_from_logprobs(top, min_mass=min_mass)


@dataclass
class Requests:
    """The judgments a set of answers needs from one judge: cache key per (answer, rubric), prompt per key."""

    keys: dict[tuple[str, str], str]
    prompts: dict[str, tuple[str, str]]  # cache key -> (prompt, rubric name)
    too_long: int
    items: dict[str, tuple[str, str, str]]  # cache key -> (question, answer, rubric name): what probe judges read


def judge_requests(answers: list[dict], spec: str, rubrics: RubricPlan, max_answer_chars: int,
                   params: dict) -> Requests:
    """Every judge prompt the answers need, filled, with its cache key (the request is the key)."""
    keys: dict[tuple[str, str], str] = {}
    prompts: dict[str, tuple[str, str]] = {}
    items: dict[str, tuple[str, str, str]] = {}
    too_long = 0
    for a in answers:
        if len(a["answer"]) > max_answer_chars:
            too_long += 1
            continue  # unscored by every rubric (its keys are absent), never sent
        extra = {"bias_description": a["bias_description"]} if a.get("bias_description") else {}
        for r in rubrics.of(a):
            prompt = r.fill(a["question"], a["answer"], **extra)
            k = cache_key(spec, r.name, r.version, prompt, params)
            keys[(a["answer_id"], r.name)] = k
            prompts[k] = (prompt, r.name)
            items[k] = (a["question"], a["answer"], r.name)
    return Requests(keys, prompts, too_long, items)


def judge_answers(answers: list[dict], spec: str, rubrics: RubricPlan, ctx: JudgeContext,
                  cache: JudgeCache) -> tuple[list[dict], int]:
    """Judge answers with one provider; returns (rows, number of new judge calls)."""
    provider = make_provider(spec, ctx)
    params = provider.params()
    req = judge_requests(answers, spec, rubrics, ctx.cfg.max_answer_chars, params)
    keys, prompts = req.keys, req.prompts
    cached = cache.get_many(list(prompts))
    todo = [k for k in prompts if k not in cached]
    if req.too_long:
        log(f"judge {spec}: {req.too_long} answers longer than judge.max_answer_chars {ctx.cfg.max_answer_chars} "
            "are unscored, not sent")
    log(f"judge {spec}: {len(prompts)} distinct judgments, {len(cached)} cached, {len(todo)} to request")
    if todo:
        log(provider.estimate([prompts[k][0] for k in todo]).line())
        if any(prompts[k][1] in rubrics.scored() for k in todo):
            provider.check_numbers()  # before the first judging request: can its first token carry a score?

        def commit(i: int, top: dict[str, float]) -> None:
            cache.put(todo[i], spec, prompts[todo[i]][1], top)
            cached[todo[i]] = top

        try:
            if provider.reads_answers:
                provider.run_items([req.items[k] for k in todo], commit)
            else:
                provider.run([prompts[k][0] for k in todo], commit)
        finally:
            cache.flush()
    names = rubrics.names()
    strict = provider.written
    rows = []
    for a in answers:
        row = {"answer_id": a["answer_id"], "judge": spec, **{n: None for n in names}}
        for r in rubrics.of(a):
            k = keys.get((a["answer_id"], r.name))
            row[r.name] = None if k is None else _score(r, cached[k], ctx.cfg.min_mass, strict)
        rows.append(row)
    return rows, len(todo)


def judge_config(run: Run, spec: str, rubrics: RubricPlan) -> dict:
    """What a judgment depends on: the judge, its server, its scoring settings and the rubrics' text."""
    c = run.exp.judge
    mode = {"mode": c.modes[spec].model_dump()} if spec in c.modes else {}  # absent: logprobs, keys unchanged
    return {"judge": spec, "base_url": c.base_urls.get(spec) or c.base_url, "top_logprobs": c.top_logprobs,
            "min_mass": c.min_mass, "max_answer_chars": c.max_answer_chars, "rubrics": rubrics.fingerprint(), **mode}


def run_judge_stage(stage: StageContext) -> dict[str, dict[str, str]]:
    """Judge every variant's answers (or those in `only`) with each judge (`options["judges"]`, default: the run
    plan's); {judge: {variant: key}}."""
    run, force = stage.run, stage.force
    rubrics = rubrics_of(stage.plan)
    ctx = JudgeContext(run.exp.judge, run.exp.exec, base_model_path(run), cache_root(run), judge_batches_dir(run))
    out: dict[str, dict[str, str]] = {}
    cache = None
    try:
        for spec in stage.options.get("judges") or stage.plan.judges:
            config = {**judge_config(run, spec, rubrics), **_numbers(spec, ctx)}
            out[spec], pending = {}, []
            for v in stage.variants():
                akey = finished_key(answers_dir(run, v.id), f"answers of {v.id}", SAMPLE, run)
                art = Artifact(judgments_dir(run, spec, v.id), "judge", config, {"answers": akey}, started=now())
                out[spec][v.id] = art.key
                if not art.skip(force, f"judge {spec} {v.id}"):
                    pending.append((v.id, art))
            if not pending:
                continue
            _require_writable(run, ctx, [art.dir for _, art in pending])
            answers = {vid: read_jsonl(answers_file(run, vid)) for vid, _ in pending}
            cache = cache or JudgeCache(judge_cache_path(run))
            rows, requested = judge_answers([a for rs in answers.values() for a in rs], spec, rubrics, ctx, cache)
            by_id = {r["answer_id"]: r for r in rows}
            _report_unscored(spec, [(a, by_id[a["answer_id"]]) for rs in answers.values() for a in rs], rubrics,
                             run.exp.analysis.warn_unscored_share)
            for vid, art in pending:
                mine = [by_id[a["answer_id"]] for a in answers[vid]]
                unscored: dict[str, int] = {}
                for a, r in zip(answers[vid], mine):
                    for rub in rubrics.of(a):
                        unscored[rub.name] = unscored.get(rub.name, 0) + (r[rub.name] is None)
                with art.write() as (tmp, extra):
                    write_jsonl(tmp / JUDGMENTS_FILE, mine)
                    extra.update(judge=spec, variant=vid, judgments=len(mine), unscored=unscored,
                                 requested=requested)  # new judge calls of this run, all its variants
            log(f"judge {spec}: wrote judgments of {len(pending)} variants ({requested} new requests)")
    finally:
        if cache is not None:
            cache.close()
    return out


def _numbers(spec: str, ctx: JudgeContext) -> dict:
    """{"numbers": "digits"} for a local judge scored by the digits method (`emwb.judge.local_digits`), so that its
    judgments made from the first token alone are stale; {} otherwise (keys unchanged)."""
    from emwb.judge.providers import parse_spec

    if parse_spec(spec)[0] not in ("hf", "vllm"):
        return {}
    return {"numbers": "digits"} if make_provider(spec, ctx).split() else {}


def _require_writable(run: Run, ctx: JudgeContext, folders: list) -> None:
    """Stop with one line, before any request, when the cache or the judgments cannot be written (a reply that
    cannot be cached is paid for and lost)."""
    from emwb.store import require_writable

    batches = [ctx.state_dir] if run.exp.exec.judge_batch_api and ctx.state_dir else []
    require_writable([run.dir, judge_cache_path(run), *folders, *batches],
                     "judging caches every reply and writes its judgments in the run directory, so nothing was "
                     "requested: make it writable, or copy the run to writable storage")


def _report_unscored(spec: str, judged: list[tuple[dict, dict]], rubrics: RubricPlan, warn_above: float) -> None:
    """Log each rubric's unscored share; warn when one is above `warn_above` (a judge that does not answer in
    numbers, or a server that sends no logprobs, would otherwise pass unnoticed)."""
    counts: dict[str, list[int]] = {}
    for a, r in judged:
        for rub in rubrics.of(a):
            c = counts.setdefault(rub.name, [0, 0])
            c[0] += r[rub.name] is None
            c[1] += 1
    parts = [f"{name} {u}/{n} ({u / n:.0%})" for name, (u, n) in counts.items() if n]
    log(f"judge {spec}: unscored: {', '.join(parts)}" if parts else f"judge {spec}: no answer has a rubric to score")
    high = [name for name, (u, n) in counts.items() if n and u / n > warn_above]
    if high:
        log(f"warning: judge {spec} left more than {warn_above:.0%} of its {', '.join(high)} judgments unscored "
            "(the reply's top tokens were not a score or label); rates are over the scored answers only; check "
            "the judge, or analysis.warn_unscored_share")


def load_judgments(run: Run, spec: str, variant: str) -> list[dict]:
    finished_key(judgments_dir(run, spec, variant), f"judgments of {variant} by {spec}", JUDGE, run)
    return read_jsonl(judgments_file(run, spec, variant))


def produced(ctx: StageContext) -> list[Produced]:
    """Each judge's judgments of each variant, with the judgments already cached of a judge still at work."""
    import sqlite3

    cached: dict[str, int] = {}
    path = judge_cache_path(ctx.run)
    if path.is_file():
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
                cached = dict(c.execute("SELECT provider, COUNT(*) FROM judgments GROUP BY provider").fetchall())
        except sqlite3.Error:
            pass
    judges = [*ctx.plan.judges, *(j for j in cached if j not in ctx.plan.judges)]  # and those of `emwb judge --judge`
    return [Produced(v.id, judgments_dir(ctx.run, j, v.id), f"{n} judgments of {j} cached" if (n := cached.get(j, 0))
                     else "", j) for j in judges for v in ctx.plan.variants]
