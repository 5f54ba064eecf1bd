"""Judge providers, chosen by a string: `openai/<model>`, `vllm/<path>`, `hf/<path>`.

Each returns, for a judge prompt (one user message), the top next-token logprobs as {token: logprob}.
`run(prompts, on_result)` calls `on_result(index, top_logprobs)` as each reply arrives.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from emwb.config import JudgeConfig
from emwb.errors import EmwbError

OnResult = Callable[[int, dict[str, float]], None]


def merge_logprobs(pairs: list[tuple[str, float]]) -> dict[str, float]:
    """{token: logprob}; tokens that decode to the same string have their probabilities added."""
    out: dict[str, float] = {}
    for token, lp in pairs:
        out[token] = math.log(math.exp(out[token]) + math.exp(lp)) if token in out else lp
    return out


def model_fingerprint(path: str) -> str:
    """A hub id as is; for a local folder, a hash of its files' names, sizes and modification times
    (so a rebuilt or replaced local judge model never reuses cached judgments)."""
    from emwb.config import config_hash

    p = Path(path)
    if not p.is_dir():
        return path
    stats = sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in p.iterdir() if f.is_file())
    return config_hash({"path": str(p.resolve()), "files": stats})


class Provider:
    spec: str

    def params(self) -> dict:
        """Request parameters that change the reply (part of the cache key)."""
        raise NotImplementedError

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        raise NotImplementedError


class HFProvider(Provider):
    """In-process transformers model: the exact next-token distribution, top-k of it reported."""

    def __init__(self, spec: str, path: str, cfg: JudgeConfig, batch_size: int = 8):
        self.spec, self.path, self.k, self.batch_size = spec, path, cfg.top_logprobs, batch_size

    def params(self) -> dict:
        return {"top_logprobs": self.k, "exact": True, "model": model_fingerprint(self.path)}

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        import torch
        from tqdm import tqdm

        from emwb.basemodel import load_causal_lm, load_tokenizer

        tok = load_tokenizer(self.path)
        tok.padding_side = "left"
        cuda = torch.cuda.is_available()
        model = load_causal_lm(self.path, dtype=torch.bfloat16 if cuda else torch.float32)
        model = model.to("cuda" if cuda else "cpu").eval()
        for start in tqdm(range(0, len(prompts), self.batch_size), desc=f"judge {self.spec}"):
            batch = prompts[start:start + self.batch_size]
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True) for p in batch]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                logits = model(**enc).logits[:, -1, :].float()
            logprobs = torch.log_softmax(logits, dim=-1).cpu()
            top = torch.topk(logprobs, self.k, dim=-1)
            for j in range(len(batch)):
                pairs = [(tok.decode([int(i)]), float(v)) for v, i in zip(top.values[j], top.indices[j])]
                on_result(start + j, merge_logprobs(pairs))


class VLLMProvider(Provider):
    """In-process vLLM engine: one token, `logprobs=k` (the sampled token is listed too; we keep all)."""

    def __init__(self, spec: str, path: str, cfg: JudgeConfig, cache_root: Path):
        self.spec, self.path, self.k, self.cache_root = spec, path, cfg.top_logprobs, cache_root

    def params(self) -> dict:
        return {"top_logprobs": self.k, "max_tokens": 1, "temperature": 0, "model": model_fingerprint(self.path)}

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        import torch

        from emwb.sampling.backends import import_vllm, start_engine

        LLM, SamplingParams = import_vllm(self.cache_root)
        llm = start_engine(LLM, dict(model=self.path, dtype="auto" if torch.cuda.is_available() else "float32",
                                     enforce_eager=not torch.cuda.is_available(), seed=0))
        sp = SamplingParams(max_tokens=1, temperature=0, logprobs=self.k, seed=0)
        convs = [[{"role": "user", "content": p}] for p in prompts]
        for i, res in enumerate(llm.chat(convs, sp, use_tqdm=True)):
            lps = res.outputs[0].logprobs[0]
            pairs = sorted(((lp.decoded_token or "", lp.logprob) for lp in lps.values()), key=lambda x: -x[1])
            on_result(i, merge_logprobs(pairs[: self.k]))


def make_provider(spec: str, cfg: JudgeConfig, base_model_path: str, cache_root: Path) -> Provider:
    """Build a provider from its string; `hf/tiny` and `vllm/tiny` mean the run's tiny base model."""
    kind, _, name = spec.partition("/")
    if not name:
        raise EmwbError(f"judge {spec!r}: expected 'openai/<model>', 'vllm/<path>' or 'hf/<path>'")
    local = base_model_path if name == "tiny" else name
    if kind == "openai":
        from emwb.judge.openai_provider import OpenAIProvider

        return OpenAIProvider(spec, name, cfg)
    if kind == "hf":
        return HFProvider(spec, local, cfg)
    if kind == "vllm":
        return VLLMProvider(spec, local, cfg, cache_root)
    raise EmwbError(f"judge {spec!r}: unknown provider {kind!r} (expected openai, vllm or hf)")
