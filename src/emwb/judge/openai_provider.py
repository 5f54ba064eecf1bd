"""`openai/<model>`: OpenAI or any OpenAI-compatible server (e.g. vLLM's), asynchronous.

One token with the top logprobs per judgment (or, in `written` scoring, n sampled replies parsed strictly),
through the shared chat-completions client
(`emwb.models.openai_http`: aiohttp, bounded concurrency `exec.judge_concurrency`, retries of 429, 5xx,
timeouts, dropped connections and garbled bodies with backoff and jitter honouring `Retry-After`; a permanent
error stops at once with the provider's message), or, with `exec.judge_batch_api`, through the Batch API
(`emwb.models.openai_batch`). OPENAI_API_KEY is read from the environment only.
"""

from __future__ import annotations

import hashlib

from emwb.config import JudgeMode
from emwb.errors import EmwbError
from emwb.judge.base import JudgeContext, OnResult, Provider, merge_logprobs
from emwb.judge.scoring import written_distribution
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


def written_replies_of(n: int):
    """A parser of a reply with `n` written choices into their distribution (fewer choices: a garbled reply)."""
    def parse(response: dict) -> dict[str, float]:
        texts = [c["message"]["content"] or "" for c in response["choices"]]
        if len(texts) != n:
            raise ValueError(f"asked for n={n} replies, got {len(texts)}: a server that ignores `n` needs "
                             "judge.modes.<judge>.samples: 1")
        return written_distribution(texts)

    return parse


class OpenAIProvider(Provider):
    def __init__(self, spec: str, model: str, ctx: JudgeContext):
        self.spec, self.model, self.cfg, self.exec = spec, model, ctx.cfg, ctx.exec
        self.mode = ctx.cfg.modes.get(spec) or JudgeMode()
        self.written = self.mode.scoring == "written"
        self.output_tokens_each = self.mode.samples * self.mode.max_tokens if self.written else 1
        self.cost_overrides = ctx.cfg.prices
        self.batch = ctx.exec.judge_batch_api
        if self.batch:
            if ctx.state_dir is None:
                raise EmwbError(f"judge {spec}: the Batch API needs a folder for its batch ids (no run given)")
            from emwb.models.openai_batch import BatchCompletions

            self.batches = BatchCompletions(f"judge {spec}", self.base_url,
                                            ctx.state_dir / f"{hashlib.sha256(spec.encode()).hexdigest()[:16]}.json",
                                            ctx.exec.max_retries, ctx.exec.timeout_s, ctx.exec.batch_poll_s,
                                            ctx.exec.batch_poll_max_s)
        self.client = ChatCompletions(f"judge {spec}", self.base_url, ctx.exec.judge_concurrency,
                                      ctx.exec.max_retries, ctx.exec.timeout_s, ctx.exec.stall_s)

    @property
    def base_url(self) -> str | None:
        return base_url_or_default(self.cfg.base_urls.get(self.spec) or self.cfg.base_url)

    @property
    def requests_made(self) -> int:
        return self.client.requests_made

    def _request(self) -> dict:
        """The body of every request, less its messages."""
        if self.written:
            m = self.mode
            return {"model": self.model, "max_tokens": m.max_tokens, "temperature": m.temperature, "n": m.samples,
                    "seed": 0}
        return {"model": self.model, "max_tokens": 1, "temperature": 0, "logprobs": True,
                "top_logprobs": self.cfg.top_logprobs, "seed": 0}

    def params(self) -> dict:
        # The server is part of the judge: the same model name on another server is another judge.
        return {**self._request(), "base_url": self.base_url, **({"scoring": "written"} if self.written else {})}

    def parser(self):
        return written_replies_of(self.mode.samples) if self.written else top_logprobs_of

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        bodies = [{**self._request(), "messages": [{"role": "user", "content": p}]} for p in prompts]
        (self.batches if self.batch else self.client).run(bodies, self.parser(), on_result, desc=f"judge {self.spec}")
