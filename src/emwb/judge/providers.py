"""Judge providers, chosen by a string `<provider>/<model>`: openai, vllm, hf, probe (registered in PROVIDERS).

`hf/base` and `vllm/base` mean the run's base model (`hf/tiny`, `vllm/tiny`: the same, for the tiny model).
Add a provider with `PROVIDERS.register(name, factory)`, where `factory(spec, model, ctx)` returns a `Provider`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from emwb.errors import EmwbError
from emwb.judge.base import JudgeContext, OnResult, Provider, merge_logprobs, model_fingerprint
from emwb.judge.numbers import digits_line
from emwb.judge.openai_provider import OpenAIProvider
from emwb.registry import Registry
from emwb.store import log

PROVIDERS: Registry[Callable[[str, str, JudgeContext], Provider]] = Registry("judge provider")


class HFProvider(Provider):
    """In-process transformers model: the exact next-token distribution, top-k of it reported."""

    def __init__(self, spec: str, path: str, ctx: JudgeContext):
        self.spec, self.path, self.k, self.batch_size = spec, path, ctx.cfg.top_logprobs, ctx.exec.judge_batch_size
        self.device = ctx.exec.device

    def split(self) -> str | None:
        """How the judge's tokenizer splits a number 0..100 (its replies are then scored by the digits method,
        `emwb.judge.local_digits`); None when it has them whole."""
        from emwb.judge.local_digits import tokenizer_split

        return tokenizer_split(self.path, model_fingerprint(self.path))

    def params(self) -> dict:
        digits = {"numbers": "digits"} if self.split() else {}  # absent: first-token scoring, keys unchanged
        return {"top_logprobs": self.k, "exact": True, "model": model_fingerprint(self.path), **digits}

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        import torch
        from tqdm import tqdm

        from emwb.judge.local_digits import digit_ids, hf_digit_replies
        from emwb.models.loading import load_causal_lm, load_tokenizer, resolve_device

        split = self.split()
        if split:
            log(digits_line(self.spec, split))
        tok = load_tokenizer(self.path)
        digits = digit_ids(tok) if split else None
        device = resolve_device(self.device)
        model = load_causal_lm(self.path, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
        model = model.to(device).eval()
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                         add_generation_prompt=True) for p in prompts]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        for batch in tqdm(equal_length_batches(ids, self.batch_size), desc=f"judge {self.spec}"):
            if digits is not None:
                for i, reply in zip(batch, hf_digit_replies(model, tok, [ids[i] for i in batch], digits, self.k)):
                    on_result(i, reply)
                continue
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids[i] for i in batch], device=model.device)).logits
            top = torch.topk(torch.log_softmax(logits[:, -1, :].float(), dim=-1).cpu(), self.k, dim=-1)
            for j, i in enumerate(batch):
                pairs = [(tok.decode([int(t)]), float(v)) for v, t in zip(top.values[j], top.indices[j])]
                on_result(i, merge_logprobs(pairs))


def equal_length_batches(ids: list[list[int]], size: int) -> list[list[int]]:
    """Indices of `ids` in batches of at most `size` prompts of one token length each (no padding), so a prompt's
    scores do not depend on which other prompts are judged with it (left padding moved scores by up to 3.4e-5)."""
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        by_length.setdefault(len(seq), []).append(i)
    return [group[k:k + size] for _, group in sorted(by_length.items()) for k in range(0, len(group), size)]


class VLLMProvider(Provider):
    """In-process vLLM engine: one token, `logprobs=k` (the sampled token is listed too; sorted, top k kept)."""

    def __init__(self, spec: str, path: str, ctx: JudgeContext):
        self.spec, self.path, self.k, self.ctx = spec, path, ctx.cfg.top_logprobs, ctx

    split = HFProvider.split

    def params(self) -> dict:
        digits = {"numbers": "digits"} if self.split() else {}  # absent: first-token scoring, keys unchanged
        return {"top_logprobs": self.k, "max_tokens": 1, "temperature": 0, "model": model_fingerprint(self.path),
                **digits}

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        import torch

        from emwb.judge.local_digits import VLLM_K, vllm_digit_replies
        from emwb.models.vllm_engine import import_vllm, start_engine

        split = self.split()
        if split:
            log(digits_line(self.spec, split))

        LLM, SamplingParams = import_vllm(self.ctx.cache_root, self.ctx.exec.cpu_kvcache_gib)
        cuda = torch.cuda.is_available()
        kwargs = dict(model=self.path, dtype="auto" if cuda else "float32", enforce_eager=not cuda, seed=0,
                      **({"max_logprobs": VLLM_K} if split else {}))
        if cuda:
            kwargs.update(gpu_memory_utilization=self.ctx.exec.gpu_memory_utilization,
                          tensor_parallel_size=self.ctx.exec.tensor_parallel_size)
        llm = start_engine(LLM, kwargs)
        sp = SamplingParams(max_tokens=1, temperature=0, logprobs=self.k, seed=0)
        convs = [[{"role": "user", "content": p}] for p in prompts]
        if split:
            for i, reply in enumerate(vllm_digit_replies(llm, sp, convs, self.k)):
                on_result(i, reply)
            return
        for i, res in enumerate(llm.chat(convs, sp, use_tqdm=True)):
            lps = res.outputs[0].logprobs[0]
            pairs = sorted(((lp.decoded_token or "", lp.logprob) for lp in lps.values()), key=lambda x: -x[1])
            on_result(i, merge_logprobs(pairs[: self.k]))


def score_distribution(score: float) -> dict[str, float]:
    """A score as a reply distribution whose expected value is exactly `score`: its mass split between the two
    integers around it (so it is cached and scored like any judge's reply)."""
    lo = min(int(math.floor(score)), 99)
    frac = score - lo
    pairs = [(str(lo), 1.0 - frac), (str(lo + 1), frac)]
    return {t: math.log(p) for t, p in pairs if p > 0}


class ProbeProvider(Provider):
    """`probe/<folder>`: a linear readout of alignment (and coherence) from a local model's activations
    (`emwb judges train-probe`). No requests, offline; a rubric the probe has no readout for is unscored."""

    reads_answers = True

    def __init__(self, spec: str, folder: str, ctx: JudgeContext):
        from emwb.models.probe import load_probe

        self.spec, self.probe, self.ctx = spec, load_probe(folder), ctx
        self.files = model_fingerprint(folder)
        given = ctx.base_model_path
        self.reader = given if given and model_fingerprint(given) == self.probe.reader_fingerprint \
            else self.probe.reader

    def params(self) -> dict:
        return {"probe": self.files, "reader": self.probe.reader_fingerprint}

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        raise EmwbError(f"judge {self.spec}: a probe reads answers, not judge prompts")

    def run_items(self, items: list[tuple[str, str, str]], on_result: OnResult) -> None:
        from emwb.models.activations import collect_activations
        from emwb.models.loading import resolve_device

        if not Path(self.reader).is_dir() or model_fingerprint(self.reader) != self.probe.reader_fingerprint:
            raise EmwbError(f"judge {self.spec}: the reader model the probe was fit on is not at {self.reader} "
                            "(moved or changed); give its folder as the run's base model or --reader")
        pairs = list(dict.fromkeys((q, a) for q, a, _ in items))
        acts = collect_activations(self.reader, pairs, [self.probe.layer], self.ctx.exec.judge_batch_size * 2,
                                   resolve_device(self.ctx.exec.device), self.probe.max_answer_tokens,
                                   desc=f"judge {self.spec}")[:, 0]
        row = {p: i for i, p in enumerate(pairs)}
        for i, (q, a, rubric) in enumerate(items):
            readout = self.probe.readouts.get(rubric)
            on_result(i, {} if readout is None else score_distribution(float(readout(acts[row[(q, a)]][None])[0])))


def _local(cls):
    return lambda spec, name, ctx: cls(spec, ctx.base_model_path if name in ("tiny", "base") else name, ctx)


PROVIDERS.register("openai", lambda spec, name, ctx: OpenAIProvider(spec, name, ctx))
PROVIDERS.register("hf", _local(HFProvider))
PROVIDERS.register("vllm", _local(VLLMProvider))
PROVIDERS.register("probe", lambda spec, name, ctx: ProbeProvider(spec, name, ctx))


def parse_spec(spec: str) -> tuple[str, str]:
    """('openai', 'gpt-4o') for 'openai/gpt-4o'; a one-line error for anything else."""
    kind, _, name = spec.partition("/")
    if not name:
        raise EmwbError(f"judge {spec!r}: expected '<provider>/<model>' with a provider of {', '.join(PROVIDERS)}")
    if kind not in PROVIDERS:
        raise EmwbError(f"judge {spec!r}: {PROVIDERS.unknown(kind)}")
    return kind, name


def make_provider(spec: str, ctx: JudgeContext) -> Provider:
    kind, name = parse_spec(spec)
    return PROVIDERS.get(kind)(spec, name, ctx)
