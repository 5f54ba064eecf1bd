"""Stage `sample`: free-form answers from the base model and every adapter -> `answers/answers.jsonl`.

One row per answer: answer_id, variant, group (dataset name or "base"), seed, question_set,
question_id, paraphrase_index, sample_index, system, question, answer.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from emwb.config import config_hash
from emwb.errors import EmwbError
from emwb.finetune.stage import adapter_dir, adapter_keys
from emwb.sampling.backends import BACKENDS
from emwb.sampling.questions import Question, load_questions
from emwb.store import Artifact, Run, log, read_jsonl, read_manifest, write_jsonl


def answers_dir(run: Run) -> Path:
    return run.path("answers")


def variants(run: Run) -> list[tuple[str, str, int | None, str | None]]:
    """(variant, group, seed, adapter path or None) for the base model and every adapter."""
    out: list[tuple[str, str, int | None, str | None]] = []
    if run.exp.include_base:
        out.append(("base", "base", None, None))
    out += [(v, d, s, str(adapter_dir(run, v))) for v, d, s in run.adapter_names()]
    return out


CODE_SET = "code"


def heldout_code_questions(run: Run) -> list[Question]:
    """Coding prompts none of the run's training sets contain (the narrow metric's test set)."""
    from emwb.datasets.codegen import generate_pairs
    from emwb.datasets.stage import dataset_dir

    n = run.exp.sampling.code_prompts
    seen: set[str] = set()
    for spec in run.exp.datasets:
        path = dataset_dir(run, spec.name) / "train.jsonl"
        if path.is_file():
            seen |= {m["content"] for r in read_jsonl(path) for m in r["messages"] if m["role"] == "user"}
    prompts = [p.prompt for p in generate_pairs(n * 4 + 50, seed=run.exp.data_seed + 10007) if p.prompt not in seen]
    k = run.exp.sampling.code_samples_per_prompt
    return [Question(f"code_{i:03d}", (p,), k, source="generated held-out coding prompts")
            for i, p in enumerate(prompts[:n])]


def set_label(name: str) -> str:
    """A short name for a question set: `main`, a file's stem, or a registered prompt set's name."""
    return name.split(":", 1)[1] if name.startswith("upstream:") else Path(name).stem


def question_plan(run: Run) -> list[tuple[str, Question, int, int]]:
    """(question set, question, paraphrase index, samples) for every prompt to sample."""
    plan = []
    sets = {qs: load_questions(qs, run.exp.dataset_mirror) for qs in run.exp.sampling.question_sets}
    seen = Counter(q.id for qs in sets.values() for q in qs)
    for qs, questions in sets.items():
        for q in questions:
            if seen[q.id] > 1:  # the same id in two sets (e.g. main and first_plot_questions): keep them apart
                q = dataclasses.replace(q, id=f"{set_label(qs)}:{q.id}")
            n = run.exp.sampling.samples_per_paraphrase or q.samples_per_paraphrase
            plan += [(qs, q, i, n) for i in range(len(q.paraphrases))]
    if run.exp.sampling.code_prompts:
        plan += [(CODE_SET, q, 0, q.samples_per_paraphrase) for q in heldout_code_questions(run)]
    return plan


def run_sample_stage(run: Run, base_key: str, force: bool = False) -> str:
    akeys = adapter_keys(run)
    plan = question_plan(run)
    cfg = run.exp.sampling
    questions_hash = config_hash([(qs, q.id, q.paraphrases, q.system, n) for qs, q, _, n in plan])
    inputs = {"base": base_key, **{f"adapter:{k}": v for k, v in akeys.items()}}
    config = {"sampling": cfg.model_dump(mode="json"), "questions": questions_hash,
              "include_base": run.exp.include_base}
    art = Artifact(answers_dir(run), "sample", config, inputs)
    if art.skip(force, "sample"):
        return art.key
    vs = variants(run)
    total = sum(n for *_, n in plan) * len(vs)
    log(f"sample: {total} answers ({len(vs)} variants x {len(plan)} prompts) with the {cfg.backend} backend")
    conversations = [q.messages(i) for _, q, i, _ in plan]
    counts = [n for *_, n in plan]
    generated = BACKENDS[cfg.backend](run.base_model_path, {v: p for v, _, _, p in vs}, conversations, counts, cfg,
                                      run.path(".cache", "vllm").resolve())
    rows = []
    for variant, group, seed, _ in vs:
        for (qs, q, p, _), answers in zip(plan, generated[variant]):
            for s, answer in enumerate(answers):
                rows.append({"answer_id": f"{variant}/{q.id}/{p}/{s}", "variant": variant, "group": group,
                             "seed": seed, "question_set": qs, "question_id": q.id, "paraphrase_index": p,
                             "sample_index": s, "system": q.system, "question": q.paraphrases[p], "answer": answer,
                             "bias_id": q.bias_id, "bias_description": q.bias_description})
    with art.write() as (tmp, extra):
        write_jsonl(tmp / "answers.jsonl", rows)
        extra.update(answers=len(rows), backend=cfg.backend)
    log(f"sample: wrote {len(rows)} answers to {art.dir / 'answers.jsonl'}")
    return art.key


def load_answers(run: Run) -> tuple[list[dict], str]:
    m = read_manifest(answers_dir(run))
    if m is None:
        raise EmwbError(f"{answers_dir(run)}: no answers yet; run `emwb sample {run.dir}` first")
    return read_jsonl(answers_dir(run) / "answers.jsonl"), m["key"]
