"""`openai/<model>`: OpenAI or any OpenAI-compatible server (e.g. vLLM's), asynchronous.

One token with the top logprobs per judgment, through the shared chat-completions client
(`emwb.models.openai_http`: aiohttp, bounded concurrency `exec.judge_concurrency`, retries of 429, 5xx,
timeouts, dropped connections and garbled bodies with backoff and jitter honouring `Retry-After`; a permanent
error stops at once with the provider's message). OPENAI_API_KEY is read from the environment only.
"""

from __future__ import annotations

from emwb.judge.base import JudgeContext, OnResult, Provider, merge_logprobs
from emwb.models.openai_http import ChatCompletions, base_url_or_default


def top_logprobs_of(response: dict) -> dict[str, float]:
    """{token: logprob} of the first generated token in a chat-completion response. A reply without them is a
    failed request (retried, never cached): this judge scores from the top logprobs alone."""
    choices = response.get("choices") or [{}]
    content = (choices[0].get("logprobs") or {}).get("content") or []
    top = content[0].get("top_logprobs") if content else None
    if not top:
        raise ValueError("the server returned no logprobs, which this judge scores from; use a model and server "
                         "that return top_logprobs (OpenAI chat models and vLLM's server do)")
    return merge_logprobs([(t["token"], t["logprob"]) for t in top])


class OpenAIProvider(Provider):
    def __init__(self, spec: str, model: str, ctx: JudgeContext):
        self.spec, self.model, self.cfg, self.exec = spec, model, ctx.cfg, ctx.exec
        self.client = ChatCompletions(f"judge {spec}", self.base_url, ctx.exec.judge_concurrency,
                                      ctx.exec.max_retries, ctx.exec.timeout_s, ctx.exec.stall_s)

    @property
    def base_url(self) -> str | None:
        return base_url_or_default(self.cfg.base_urls.get(self.spec) or self.cfg.base_url)

    @property
    def requests_made(self) -> int:
        return self.client.requests_made

    def params(self) -> dict:
        # The server is part of the judge: the same model name on another server is another judge.
        return {"model": self.model, "max_tokens": 1, "temperature": 0, "logprobs": True,
                "top_logprobs": self.cfg.top_logprobs, "seed": 0, "base_url": self.base_url}

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        bodies = [{"model": self.model, "messages": [{"role": "user", "content": p}], "max_tokens": 1,
                   "temperature": 0, "logprobs": True, "top_logprobs": self.cfg.top_logprobs, "seed": 0}
                  for p in prompts]
        self.client.run(bodies, top_logprobs_of, on_result, desc=f"judge {self.spec}")
