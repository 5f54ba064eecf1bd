"""Stage `judge`: score every answer with every judge and rubric -> `judgments/<judge>/judgments.jsonl`.

Rows: answer_id, judge, and one column per rubric (a float, or null when unscored). Replies are cached
in `judge_cache.sqlite` as they arrive, so a re-run pays for nothing already judged.
"""

from __future__ import annotations

from pathlib import Path

from emwb.config import JudgeConfig
from emwb.errors import EmwbError
from emwb.judge.cache import JudgeCache, cache_key
from emwb.judge.providers import make_provider
from emwb.judge.rubric import load_rubric
from emwb.judge.scoring import score_from_logprobs, yes_probability
from emwb.sampling.stage import CODE_SET, load_answers
from emwb.store import Run, atomic_dir, is_done, log, now, read_jsonl, read_manifest, stage_key, write_jsonl, \
    write_manifest


def judge_slug(spec: str) -> str:
    return spec.replace("/", "__").replace(":", "_")


def judgments_dir(run: Run, spec: str) -> Path:
    return run.path("judgments", judge_slug(spec))


def judge_answers(answers: list[dict], spec: str, cfg: JudgeConfig, cache: JudgeCache, base_model_path: str,
                  cache_root: Path) -> tuple[list[dict], int]:
    """Judge answers with one provider over all rubrics; returns (rows, number of new judge calls)."""
    provider = make_provider(spec, cfg, base_model_path, cache_root)
    free_form = [load_rubric(r) for r in cfg.rubrics]
    code = [load_rubric(r) for r in cfg.code_rubrics]
    rubrics_for = lambda a: code if a.get("question_set") == CODE_SET else free_form  # noqa: E731
    params = provider.params()
    keys: dict[tuple[str, str], str] = {}
    prompts: dict[str, tuple[str, str]] = {}  # cache key -> (prompt, rubric name)
    for a in answers:
        for r in rubrics_for(a):
            prompt = r.fill(a["question"], a["answer"])
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

        provider.run([prompts[k][0] for k in todo], commit)
    rows = []
    for a in answers:
        row = {"answer_id": a["answer_id"], "judge": spec, **{r.name: None for r in free_form + code}}
        for r in rubrics_for(a):
            top = cached[keys[(a["answer_id"], r.name)]]
            scorer = yes_probability if r.kind == "yes_no" else score_from_logprobs
            row[r.name] = scorer(top, min_mass=cfg.min_mass)
        rows.append(row)
    return rows, len(todo)


def run_judge_stage(run: Run, answers_key: str | None = None, judges: list[str] | None = None,
                    force: bool = False) -> dict[str, str]:
    """Judge the run's answers with each judge (default: the experiment's); return {judge: key}."""
    answers, akey = load_answers(run)
    cfg = run.exp.judge
    keys = {}
    cache = JudgeCache(run.path("judge_cache.sqlite"))
    try:
        for spec in judges or cfg.judges:
            config = {"judge": spec, **cfg.model_dump(mode="json", exclude={"judges", "concurrency"})}
            key = stage_key("judge", config, {"answers": akey})
            keys[spec] = key
            out = judgments_dir(run, spec)
            if not force and is_done(out, key):
                log(f"judge {spec}: up to date, skipped")
                continue
            started = now()
            rows, requested = judge_answers(answers, spec, cfg, cache, run.base_model_path,
                                            run.path(".cache", "vllm").resolve())
            with atomic_dir(out) as tmp:
                write_jsonl(tmp / "judgments.jsonl", rows)
                is_code = [a.get("question_set") == CODE_SET for a in answers]
                unscored = {r: sum(1 for x, c in zip(rows, is_code) if x[r] is None and c == (r in cfg.code_rubrics))
                            for r in dict.fromkeys(cfg.rubrics + cfg.code_rubrics)}
                write_manifest(tmp, stage="judge", key=key, config=config, inputs={"answers": akey},
                               started=started, extra={"judgments": len(rows), "requested": requested,
                                                       "unscored": unscored})
            log(f"judge {spec}: wrote {len(rows)} judgments ({requested} new requests; unscored {unscored})")
    finally:
        cache.close()
    return keys


def load_judgments(run: Run, spec: str) -> list[dict]:
    d = judgments_dir(run, spec)
    if read_manifest(d) is None:
        raise EmwbError(f"{d}: no judgments for {spec}; run `emwb judge {run.dir}` first")
    return read_jsonl(d / "judgments.jsonl")
