"""Stage `sample`: answers to every evaluation's prompts, one artifact per variant: `answers/<variant>/`.

Only variants whose artifact is missing or stale are sampled (adding a seed or an organism samples just
the new variants); all of them go to the sampler together. Rows follow `layout.ANSWER_FIELDS`.
"""

from __future__ import annotations

from emwb.catalog.evaluations import Evaluation, questions_of, resolve
from emwb.catalog.questions import Question
from emwb.config import config_hash
from emwb.layout import (
    Variant,
    answers_dir,
    base_key,
    base_model_path,
    cache_root,
    data_dir,
    data_file,
    finished_key,
    variant_model_dir,
    variants,
)
from emwb.models.ref import ModelRef
from emwb.sampling.samplers import SAMPLERS, SampleJob
from emwb.store import Artifact, Run, log, read_jsonl, write_jsonl

PlanItem = tuple[str, str, Question, int, int]  # evaluation, question set, question, paraphrase index, samples


def training_prompts(run: Run) -> set[str]:
    """Every user prompt of the run's chat datasets (held-out prompts must avoid them)."""
    seen: set[str] = set()
    for name in run.exp.data:
        finished_key(data_dir(run, name), f"dataset {name}", "data", run)
        for r in read_jsonl(data_file(run, name)):
            seen |= {m["content"] for m in r.get("messages", []) if m["role"] == "user"}
    return seen


def sampling_plan(run: Run) -> list[PlanItem]:
    """Every prompt to sample, evaluation by evaluation."""
    evals: list[Evaluation] = [resolve(e) for e in run.exp.evaluations]
    exclude = training_prompts(run) if any(e.generator for e in evals) else set()
    plan: list[PlanItem] = []
    for ev in evals:
        for label, q in questions_of(ev, run.exp.dataset_mirror, run.exp.data_seed, exclude):
            n = ev.samples_per_paraphrase or q.samples_per_paraphrase
            plan += [(ev.name, label, q, i, n) for i in range(len(q.paraphrases))]
    return plan


def model_of(run: Run, v: Variant) -> tuple[ModelRef, str]:
    """The variant's model and its identity (the stage key of what produced it)."""
    base = base_model_path(run)
    path = variant_model_dir(run, v)
    if path is None:
        return ModelRef.of_base(base), base_key(run)
    return ModelRef.of_lora(base, path), finished_key(path, f"adapter of {v.id}", "finetune", run)


def answer_rows(v: Variant, plan: list[PlanItem], answers: list[list[str]]) -> list[dict]:
    rows = []
    for (ev, qs, q, p, _), texts in zip(plan, answers):
        for s, text in enumerate(texts):
            rows.append({"answer_id": f"{v.id}/{ev}/{q.id}/{p}/{s}", "variant": v.id, "group": v.group,
                         "organism": v.organism, "phase": v.phase, "seed": v.seed, "evaluation": ev,
                         "question_set": qs, "question_id": q.id, "paraphrase_index": p, "sample_index": s,
                         "system": q.system, "question": q.paraphrases[p], "answer": text, "bias_id": q.bias_id,
                         "bias_description": q.bias_description})
    return rows


def run_sample_stage(run: Run, force: bool = False) -> dict[str, str]:
    """Sample every variant that is not current; return {variant: stage key}."""
    plan = sampling_plan(run)
    cfg = run.exp.sampling
    prompts = config_hash([(ev, qs, q.id, q.paraphrases, q.system, n) for ev, qs, q, _, n in plan])
    config = {"sampling": cfg.model_dump(mode="json"), "prompts": prompts}
    keys, pending, arts = {}, {}, {}
    for v in variants(run.exp):
        ref, mkey = model_of(run, v)
        art = Artifact(answers_dir(run, v.id), "sample", config, {"model": mkey})
        keys[v.id] = art.key
        if not art.skip(force, f"sample/{v.id}"):
            pending[v.id], arts[v.id] = ref, (art, v)
    if not pending:
        return keys
    per_variant = sum(n for *_, n in plan)
    log(f"sample: {per_variant * len(pending)} answers ({len(pending)} variants x {len(plan)} prompts) with the "
        f"{cfg.backend} sampler")
    job = SampleJob(pending, [q.messages(i) for _, _, q, i, _ in plan], [n for *_, n in plan], cfg, run.exp.exec,
                    cache_root(run))
    generated = SAMPLERS.get(cfg.backend)(job)
    for vid, (art, v) in arts.items():
        rows = answer_rows(v, plan, generated[vid])
        with art.write() as (tmp, extra):
            write_jsonl(tmp / "answers.jsonl", rows)
            extra.update(answers=len(rows), sampler=cfg.backend, variant=vid)
        log(f"sample/{vid}: wrote {len(rows)} answers")
    return keys
