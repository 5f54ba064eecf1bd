"""Stage `judge`: score every variant's answers with every judge -> `judgments/<judge>/<variant>/`.

Each answer is judged with the rubrics of its evaluation. Rows: answer_id, judge, one column per rubric (a
float, or null when unscored). Replies are cached in `judge_cache.sqlite` as they arrive, so a re-run pays
for nothing already judged, and only variants whose judgments are missing or stale are judged.
"""

from __future__ import annotations

from emwb.catalog.evaluations import resolve
from emwb.catalog.rubric import Rubric, load_rubric
from emwb.config import config_hash
from emwb.judge.base import JudgeContext
from emwb.judge.cache import JudgeCache, cache_key
from emwb.judge.providers import make_provider
from emwb.judge.scoring import score_from_logprobs, yes_probability
from emwb.layout import (
    answers_dir,
    base_model_path,
    cache_root,
    finished_key,
    judge_cache_path,
    judgments_dir,
    variants,
)
from emwb.store import Artifact, Run, log, read_jsonl, write_jsonl


def evaluation_rubrics(run: Run) -> dict[str, list[Rubric]]:
    """{evaluation name: its rubrics}."""
    return {e.name: [load_rubric(r) for r in resolve(e).rubrics] for e in run.exp.evaluations}


def judge_answers(answers: list[dict], spec: str, rubrics: dict[str, list[Rubric]], ctx: JudgeContext,
                  cache: JudgeCache) -> tuple[list[dict], int]:
    """Judge answers with one provider; returns (rows, number of new judge calls)."""
    provider = make_provider(spec, ctx)
    params = provider.params()
    keys: dict[tuple[str, str], str] = {}
    prompts: dict[str, tuple[str, str]] = {}  # cache key -> (prompt, rubric name)
    for a in answers:
        extra = {"bias_description": a["bias_description"]} if a.get("bias_description") else {}
        for r in rubrics[a["evaluation"]]:
            prompt = r.fill(a["question"], a["answer"], **extra)
            k = cache_key(spec, r.name, r.version, prompt, params)
            keys[(a["answer_id"], r.name)] = k
            prompts[k] = (prompt, r.name)
    cached = cache.get_many(list(prompts))
    todo = [k for k in prompts if k not in cached]
    log(f"judge {spec}: {len(prompts)} distinct judgments, {len(cached)} cached, {len(todo)} to request")
    if todo:
        def commit(i: int, top: dict[str, float]) -> None:
            cache.put(todo[i], spec, prompts[todo[i]][1], top)
            cached[todo[i]] = top

        try:
            provider.run([prompts[k][0] for k in todo], commit)
        finally:
            cache.flush()
    names = list(dict.fromkeys(r.name for rs in rubrics.values() for r in rs))
    rows = []
    for a in answers:
        row = {"answer_id": a["answer_id"], "judge": spec, **{n: None for n in names}}
        for r in rubrics[a["evaluation"]]:
            scorer = yes_probability if r.kind == "yes_no" else score_from_logprobs
            row[r.name] = scorer(cached[keys[(a["answer_id"], r.name)]], min_mass=ctx.cfg.min_mass)
        rows.append(row)
    return rows, len(todo)


def judge_config(run: Run, spec: str, rubrics: dict[str, list[Rubric]]) -> dict:
    """What a judgment depends on: the judge, its server, its scoring settings and the rubrics' text."""
    c = run.exp.judge
    return {"judge": spec, "base_url": c.base_urls.get(spec) or c.base_url, "top_logprobs": c.top_logprobs,
            "min_mass": c.min_mass,
            "rubrics": {ev: [(r.name, r.version, config_hash(r.template)) for r in rs] for ev, rs in rubrics.items()}}


def run_judge_stage(run: Run, judges: list[str] | None = None, force: bool = False) -> dict[str, dict[str, str]]:
    """Judge every variant's answers with each judge (default: the experiment's); return {judge: {variant: key}}."""
    rubrics = evaluation_rubrics(run)
    ctx = JudgeContext(run.exp.judge, run.exp.exec, base_model_path(run), cache_root(run))
    out: dict[str, dict[str, str]] = {}
    cache = None
    try:
        for spec in judges or run.exp.judge.judges:
            config = judge_config(run, spec, rubrics)
            out[spec], pending = {}, []
            for v in variants(run.exp):
                akey = finished_key(answers_dir(run, v.id), f"answers of {v.id}", "sample", run)
                art = Artifact(judgments_dir(run, spec, v.id), "judge", config, {"answers": akey})
                out[spec][v.id] = art.key
                if not art.skip(force, f"judge {spec} {v.id}"):
                    pending.append((v.id, art))
            if not pending:
                continue
            answers = {vid: read_jsonl(answers_dir(run, vid) / "answers.jsonl") for vid, _ in pending}
            cache = cache or JudgeCache(judge_cache_path(run))
            rows, requested = judge_answers([a for rs in answers.values() for a in rs], spec, rubrics, ctx, cache)
            by_id = {r["answer_id"]: r for r in rows}
            for vid, art in pending:
                mine = [by_id[a["answer_id"]] for a in answers[vid]]
                unscored: dict[str, int] = {}
                for a, r in zip(answers[vid], mine):
                    for rub in rubrics[a["evaluation"]]:
                        unscored[rub.name] = unscored.get(rub.name, 0) + (r[rub.name] is None)
                with art.write() as (tmp, extra):
                    write_jsonl(tmp / "judgments.jsonl", mine)
                    extra.update(judge=spec, variant=vid, judgments=len(mine), unscored=unscored,
                                 requested=requested)  # new judge calls of this run, all its variants
            log(f"judge {spec}: wrote judgments of {len(pending)} variants ({requested} new requests)")
    finally:
        if cache is not None:
            cache.close()
    return out


def load_judgments(run: Run, spec: str, variant: str) -> list[dict]:
    d = judgments_dir(run, spec, variant)
    finished_key(d, f"judgments of {variant} by {spec}", "judge", run)
    return read_jsonl(d / "judgments.jsonl")
