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
from emwb.store import Artifact, Run, log, read_jsonl, read_manifest, write_jsonl


def judge_slug(spec: str) -> str:
    return spec.replace("/", "__").replace(":", "_")


def judgments_dir(run: Run, spec: str) -> Path:
    return run.path("judgments", judge_slug(spec))


def answer_kind(a: dict) -> str:
    """Which rubrics apply: 'code' (held-out coding prompts), 'bias' (RM-bias prompts) or 'free' (free-form)."""
    return "code" if a.get("question_set") == CODE_SET else "bias" if a.get("bias_description") else "free"


def rubric_names(cfg: JudgeConfig, kind: str) -> list[str]:
    return {"free": cfg.rubrics, "code": cfg.code_rubrics, "bias": cfg.bias_rubrics}[kind]


def judge_answers(answers: list[dict], spec: str, cfg: JudgeConfig, cache: JudgeCache, base_model_path: str,
                  cache_root: Path) -> tuple[list[dict], int]:
    """Judge answers with one provider over all rubrics; returns (rows, number of new judge calls)."""
    provider = make_provider(spec, cfg, base_model_path, cache_root)
    rubrics = {kind: [load_rubric(r) for r in rubric_names(cfg, kind)] for kind in ("free", "code", "bias")}
    params = provider.params()
    keys: dict[tuple[str, str], str] = {}
    prompts: dict[str, tuple[str, str]] = {}  # cache key -> (prompt, rubric name)
    for a in answers:
        extra = {"bias_description": a["bias_description"]} if a.get("bias_description") else {}
        for r in rubrics[answer_kind(a)]:
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

        provider.run([prompts[k][0] for k in todo], commit)
    rows = []
    for a in answers:
        row = {"answer_id": a["answer_id"], "judge": spec, **{r.name: None for rs in rubrics.values() for r in rs}}
        for r in rubrics[answer_kind(a)]:
            top = cached[keys[(a["answer_id"], r.name)]]
            scorer = yes_probability if r.kind == "yes_no" else score_from_logprobs
            row[r.name] = scorer(top, min_mass=cfg.min_mass)
        rows.append(row)
    return rows, len(todo)


def unscored_counts(answers: list[dict], rows: list[dict], cfg: JudgeConfig) -> dict[str, int]:
    """Per rubric, how many answers it applies to came back unscored."""
    out: dict[str, int] = {}
    for a, row in zip(answers, rows):
        for r in rubric_names(cfg, answer_kind(a)):
            out[r] = out.get(r, 0) + (row[r] is None)
    return out


def run_judge_stage(run: Run, judges: list[str] | None = None, force: bool = False) -> dict[str, str]:
    """Judge the run's answers with each judge (default: the experiment's); return {judge: key}."""
    answers, akey = load_answers(run)
    cfg = run.exp.judge
    keys = {}
    cache = JudgeCache(run.path("judge_cache.sqlite"))
    try:
        for spec in judges or cfg.judges:
            config = {"judge": spec, **cfg.model_dump(mode="json", exclude={"judges", "concurrency"})}
            art = Artifact(judgments_dir(run, spec), "judge", config, {"answers": akey})
            keys[spec] = art.key
            if art.skip(force, f"judge {spec}"):
                continue
            rows, requested = judge_answers(answers, spec, cfg, cache, run.base_model_path,
                                            run.path(".cache", "vllm").resolve())
            unscored = unscored_counts(answers, rows, cfg)
            with art.write() as (tmp, extra):
                write_jsonl(tmp / "judgments.jsonl", rows)
                extra.update(judgments=len(rows), requested=requested, unscored=unscored)
            log(f"judge {spec}: wrote {len(rows)} judgments ({requested} new requests; unscored {unscored})")
    finally:
        cache.close()
    return keys


def load_judgments(run: Run, spec: str) -> list[dict]:
    d = judgments_dir(run, spec)
    if read_manifest(d) is None:
        raise EmwbError(f"{d}: no judgments for {spec}; run `emwb judge {run.dir}` first")
    return read_jsonl(d / "judgments.jsonl")
