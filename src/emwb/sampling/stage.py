"""Stage `sample`: answers to every evaluation's prompts, one artifact per variant: `answers/<variant>/`.

Only variants whose artifact is missing or stale are sampled (adding a seed or an organism samples just the
new ones). Variants that share weights go through one sampler session (one vLLM engine, every adapter's
requests in one batch), after a serving parity check. The prompts are sampled in chunks; each finished chunk
is saved under `.partial/`, so a killed stage resumes after the last saved chunk, and every request carries its
own seed, so the rows equal an uninterrupted run's. Rows follow `layout.ANSWER_FIELDS`; `answers.parquet` holds
the same rows as `answers.jsonl`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from emwb.catalog.evaluations import distinct_ids, generated_questions
from emwb.catalog.questions import Question
from emwb.config import config_hash
from emwb.errors import EmwbError, check_interrupt
from emwb.layout import (
    ANSWERS_FILE,
    ANSWERS_PARQUET,
    Variant,
    adapter_dir,
    answers_dir,
    base_key,
    base_model_path,
    cache_root,
    data_dir,
    data_file,
    edit_files,
    finished_key,
    full_weights,
    model_ref,
    partial_dir,
    phase_of,
    remote_base,
)
from emwb.models.loading import check_adapter
from emwb.models.ref import ModelRef
from emwb.sampling.parity import check_parity, reference_logprobs, tolerance
from emwb.sampling.samplers import SAMPLERS, Request, generation_defaults, render_prompt
from emwb.stages import DATA, FINETUNE, Produced
from emwb.store import Artifact, Run, log, now, read_jsonl, read_manifest, write_jsonl

if TYPE_CHECKING:
    from emwb.context import StageContext
    from emwb.plan import Plan

PlanItem = tuple[str, str, Question, int, int]  # evaluation, question set, question, paraphrase index, samples
PARITY_PROMPTS = 2


def training_prompts(run: Run) -> set[str]:
    """Every user prompt of the run's chat datasets (held-out prompts must avoid them)."""
    seen: set[str] = set()
    for name in run.exp.data:
        finished_key(data_dir(run, name), f"dataset {name}", DATA, run)
        for r in read_jsonl(data_file(run, name)):
            seen |= {m["content"] for m in r.get("messages", []) + r.get("prompt", []) if m["role"] == "user"}
    return seen


def sampling_items(run: Run, plan: Plan) -> list[PlanItem]:
    """Every prompt to sample, evaluation by evaluation: the run plan's questions, then generated prompts (which
    avoid the run's training prompts)."""
    evals = plan.evaluations
    exclude = training_prompts(run) if any(e.generator for e in evals) else set()
    items: list[PlanItem] = []
    for ev in evals:
        questions = list(ev.questions)
        if ev.generator:
            made = generated_questions(ev, run.exp.dataset_mirror, run.exp.data_seed, exclude)
            questions = distinct_ids([(label, [q]) for label, q in questions] + [(ev.generator, made)])
        for label, q in questions:
            n = ev.samples_per_paraphrase or q.samples_per_paraphrase
            items += [(ev.name, label, q, i, n) for i in range(len(q.paraphrases))]
    return items


def model_of(run: Run, plan: Plan, v: Variant) -> tuple[ModelRef, str]:
    """The variant's model and its identity (the stage key of what produced it); an edited variant: the model of
    the variant it edits, with the edit (and the key of its direction)."""
    if v.edit is not None:
        on = next(p for p in plan.variants if p.id == v.edit.on)
        ref, key = model_of(run, plan, on)
        files, dkey = edit_files(run, v.edit)
        edit = {"kind": v.edit.kind, "layers": list(v.edit.layers), "alpha": v.edit.alpha, "control": v.edit.control}
        return (dataclasses.replace(ref, edit=json.dumps({**edit, **files})),
                f"{key}+{json.dumps(edit, sort_keys=True)}@{dkey}")
    if v.organism is None:
        return model_ref(run, v), base_key(run)
    key = finished_key(adapter_dir(run, v.organism, v.phase_index, v.seed), f"adapter of {v.id}", FINETUNE, run)
    ref = model_ref(run, v)
    if ref.kind == "lora":
        check_adapter(Path(ref.path))
    return ref, key + ("" if v.step is None else f"@{v.step}")


def render(run: Run, plan: list[PlanItem]) -> list[tuple[str, tuple[int, ...]]]:
    """(rendered prompt text, its token ids) per plan item, with the base model's chat template (a remote model:
    the conversation as JSON, no token ids)."""
    from emwb.models.loading import load_tokenizer

    if remote_base(run.exp):
        return [(json.dumps(q.messages(i), ensure_ascii=False), ()) for _, _, q, i, _ in plan]

    tok = load_tokenizer(base_model_path(run))
    return [render_prompt(tok, q.messages(i)) for _, _, q, i, _ in plan]


def lora_shape(run: Run, plan: Plan) -> tuple[int, int] | None:
    """(largest rank, number) of the run's LoRA variants, from the experiment (known before any adapter is
    trained); None without LoRA variants."""
    ranks = []
    for v in plan.variants:
        if v.organism is None or remote_base(run.exp) or full_weights(run.exp, v):
            continue
        ranks.append(run.exp.phase_args(phase_of(run.exp, v)).lora.r)
    return (max(ranks), len(ranks)) if ranks else None


def check_lengths(plan: list[PlanItem], prompts: list, max_model_len: int, max_new_tokens: int) -> None:
    """Before any engine starts: every prompt (after the chat template) leaves room for the answer."""
    room = max_model_len - max_new_tokens
    for (ev, qs, q, i, _), (_, ids) in zip(plan, prompts):
        if len(ids) > room:
            raise EmwbError(f"evaluation {ev}: question {q.id} ({qs}) paraphrase {i + 1} is {len(ids)} tokens with "
                            f"the chat template; sampling.vllm.max_model_len {max_model_len} leaves {room} after "
                            f"max_new_tokens {max_new_tokens}: shorten it or raise max_model_len")


def answer_rows(v: Variant, plan: list[PlanItem], prompts: list, samples: list, start: int) -> list[dict]:
    """The rows of one variant for plan items start..start+len(samples)."""
    rows = []
    for k, texts in enumerate(samples):
        (ev, qs, q, p, _), (text, ids) = plan[start + k], prompts[start + k]
        digest = hashlib.sha256(text.encode()).hexdigest()
        for s, sample in enumerate(texts):
            rows.append({"answer_id": f"{v.id}/{ev}/{q.id}/{p}/{s}", "variant": v.id, "group": v.group,
                         "organism": v.organism, "phase": v.phase, "seed": v.seed, "evaluation": ev,
                         "question_set": qs, "question_id": q.id, "paraphrase_index": p, "sample_index": s,
                         "system": q.system, "question": q.paraphrases[p], "answer": sample.text,
                         "finish_reason": sample.finish_reason, "prompt_sha256": digest, "prompt_tokens": len(ids),
                         "answer_tokens": sample.tokens, "bias_id": q.bias_id, "bias_description": q.bias_description})
    return rows


def chunk_prompts(run: Run) -> int:
    """Prompts per saved chunk: exec.sample_chunk_prompts, rounded up to a multiple of sampling.hf_batch, so the
    hf sampler's groups of consecutive prompts are the same whatever the (run-only) chunk size."""
    size, group = run.exp.exec.sample_chunk_prompts, run.exp.sampling.hf_batch
    return -(-size // group) * group


def _chunk_file(run: Run, art: Artifact, variant: str, j: int):
    size = chunk_prompts(run)  # another chunk size starts afresh
    return partial_dir(run, "answers", variant) / f"{art.key[:16]}-c{size}" / f"chunk-{j:05d}.jsonl"


def _sample_group(run: Run, arts: dict[str, tuple[Artifact, Variant, ModelRef]], plan, prompts,
                  backend: str, shape: tuple[int, int] | None) -> None:
    """Sample the variants of one weights group chunk by chunk, then write each variant's artifact."""
    ex, cfg = run.exp.exec, run.exp.sampling
    size = chunk_prompts(run)
    chunks = list(enumerate(range(0, len(plan), size)))
    todo = {j: [v for v in arts if not _chunk_file(run, arts[v][0], v, j).is_file()] for j, _ in chunks}
    done = sum(len(arts) - len(t) for t in todo.values())
    if done:
        log(f"sample: resuming, {done} of {len(chunks) * len(arts)} variant chunks already saved")
    models = {v: ref for v, (_, _, ref) in arts.items()}
    if any(todo.values()):
        probe = [ids for _, ids in prompts[:PARITY_PROMPTS]]
        reference = {}
        if ex.parity_check and SAMPLERS.get(backend).parity:
            from emwb.models.loading import resolve_device

            trained = {v: (read_manifest(Path(ref.adapter)) or {}).get("adapter_config") if ref.adapter else None
                       for v, ref in models.items()}
            reference = reference_logprobs(models, trained, probe, resolve_device(ex.device))
        on_base = any(ref.kind in ("base", "lora") for ref in models.values())  # the base model's weights
        sampler = SAMPLERS.get(backend)(models, cfg, ex, cache_root(run), shape if on_base else None)
        try:
            if reference:
                worst = check_parity(sampler, reference, probe, tolerance(cfg.vllm.dtype, ex.parity_tolerance))
                log("sample: serving parity ok (" + ", ".join(f"{v} {d:.1e}" for v, d in worst.items()) + ")")
            for j, start in chunks:
                check_interrupt()  # Ctrl-C stops between chunks even if its KeyboardInterrupt got lost
                if not todo[j]:
                    continue
                part = plan[start:start + size]
                requests = [Request(ids, n, cfg.seed + start + k, tuple(q.messages(i)))
                            for k, ((_, _, q, i, n), (_, ids)) in enumerate(zip(part, prompts[start:start + size]))]
                out = sampler.generate(requests, todo[j])
                for v in todo[j]:
                    rows = answer_rows(arts[v][1], plan, prompts, out[v], start)
                    write_jsonl(_chunk_file(run, arts[v][0], v, j), rows)
                log(f"sample: chunk {j + 1}/{len(chunks)} saved for {len(todo[j])} variants")
        finally:
            sampler.close()
    for v, (art, _, _) in arts.items():
        rows = [r for j, _ in chunks for r in read_jsonl(_chunk_file(run, art, v, j))]
        with art.write() as (tmp, extra):
            write_jsonl(tmp / ANSWERS_FILE, rows)
            _parquet(rows, tmp / ANSWERS_PARQUET)
            extra.update(answers=len(rows), sampler=backend, variant=v)
            if cfg.generation_config:  # what the model's generation_config added to the sampling
                extra.update(model_generation_config=generation_defaults(arts[v][2].weights))
        shutil.rmtree(partial_dir(run, "answers", v), ignore_errors=True)
        log(f"sample/{v}: wrote {len(rows)} answers")


def _parquet(rows: list[dict], path) -> None:
    import pandas as pd

    pd.DataFrame(rows).to_parquet(path, index=False)


def keyed_sampling(cfg) -> dict:
    """The sampling settings in the answers' key: generation_config and hf_batch only when set (runs from before
    these options stay current)."""
    off = {name for name, unset in (("generation_config", not cfg.generation_config), ("hf_batch", cfg.hf_batch == 1))
           if unset}
    return cfg.model_dump(mode="json", exclude=off or None)


def run_sample_stage(ctx: StageContext) -> dict[str, str]:
    """Sample every variant (or those in `ctx.only`) that is not current; return {variant: stage key}."""
    run, force = ctx.run, ctx.force
    plan = sampling_items(run, ctx.plan)
    cfg = run.exp.sampling
    prompts_id = config_hash([(ev, qs, q.id, q.paraphrases, q.system, n) for ev, qs, q, _, n in plan])
    config = {"sampling": keyed_sampling(cfg), "prompts": prompts_id}
    keys: dict[str, str] = {}
    groups: dict[str, dict[str, tuple[Artifact, Variant, ModelRef]]] = {}
    for v in ctx.variants():
        ref, mkey = model_of(run, ctx.plan, v)
        art = Artifact(answers_dir(run, v.id), "sample", config, {"model": mkey}, started=now())
        keys[v.id] = art.key
        if not art.skip(force, f"sample/{v.id}"):
            groups.setdefault(ref.weights or f"remote:{ref.base_url}", {})[v.id] = (art, v, ref)
    if not groups:
        return keys
    prompts = render(run, plan)
    pending = sum(len(g) for g in groups.values())
    backend = "openai" if remote_base(run.exp) else cfg.backend  # remote models: only the API samples them
    if backend == "vllm":
        check_lengths(plan, prompts, cfg.vllm.max_model_len, cfg.max_new_tokens)
    log(f"sample: {sum(n for *_, n in plan) * pending} answers ({pending} variants x {len(plan)} prompts) with the "
        f"{backend} sampler")
    for arts in groups.values():  # one session (engine) per set of weights: a base model and its adapters
        _sample_group(run, arts, plan, prompts, backend, lora_shape(run, ctx.plan))
    return keys


def cells(ctx: StageContext) -> list[tuple[str, list[str]]]:
    """The variants one Ray sampling cell samples together: every variant on the base model's weights (the base
    and its LoRA adapters) in one cell, as the local executor batches them in one engine; each full checkpoint
    alone."""
    shared, alone = [], []
    for v in ctx.plan.variants:
        (alone if full_weights(ctx.exp, v) else shared).append(v.id)
    return [("+".join(g), g) for g in [shared, *([v] for v in alone)] if g]


def produced(ctx: StageContext) -> list[Produced]:
    """Each variant's answers, with the chunks a killed sampling saved (of those planned)."""
    out, total = [], None
    for v in ctx.plan.variants:
        chunks = {c.name for c in partial_dir(ctx.run, "answers", v.id).glob("*/chunk-*.jsonl")}
        if chunks and total is None:
            total = -(-len(sampling_items(ctx.run, ctx.plan)) // chunk_prompts(ctx.run))
        out.append(Produced(v.id, answers_dir(ctx.run, v.id), f"{len(chunks)} of {total} chunks saved" if chunks
                            else ""))
    return out
