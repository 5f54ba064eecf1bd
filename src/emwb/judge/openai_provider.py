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
from emwb.judge.numbers import NUMBERS, PROBE, probe_verdict, refusal
from emwb.judge.scoring import written_distribution
from emwb.models.openai_http import ChatCompletions, base_url_or_default, choices_of


_NUMBER_VERDICTS: dict[tuple[str, str], tuple[str, str]] = {}  # (server, model) -> (verdict, how), per process


def top_logprobs_of(response: dict) -> dict[str, float]:
    """{token: logprob} of the first generated token in a chat-completion response. A reply without them is a
    failed request (retried, never cached): this judge scores from the top logprobs alone."""
    choices = choices_of(response)
    content = (choices[0].get("logprobs") or {}).get("content") or []
    top = content[0].get("top_logprobs") if content else None
    if not top:
        raise ValueError("the server returned no logprobs, which this judge scores from; use a model and server "
                         "that return top_logprobs (OpenAI chat models and vLLM's server do)")
    return merge_logprobs([(t["token"], t["logprob"]) for t in top])


def written_replies_of(n: int):
    """A parser of a reply with `n` written choices into their distribution (fewer choices: a garbled reply)."""
    def parse(response: dict) -> dict[str, float]:
        texts = [c["message"]["content"] or "" for c in choices_of(response)]
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

    def check_numbers(self) -> None:
        """Refuse a judge whose first token cannot carry a whole score (`emwb.judge.numbers`): asked once per
        server and model in a process, of the server's /tokenize, else with one probe request. Written scoring reads
        whole replies, and OpenAI's own tokenizers carry every number up to 999 as one token: neither is asked."""
        if self.written or self.base_url is None:
            return
        key = (self.base_url, self.model)
        if key not in _NUMBER_VERDICTS:
            _NUMBER_VERDICTS[key] = self._number_verdict()
            if _NUMBER_VERDICTS[key][0] == "unknown":  # said once, when found out
                from emwb.store import log

                log(f"warning: judge {self.spec}: could not tell whether its first token carries a whole score "
                    f"({_NUMBER_VERDICTS[key][1]}); if it writes numbers digit by digit, its scores are 0-9: check "
                    "them, or use written scoring")
        verdict, how = _NUMBER_VERDICTS[key]
        if verdict == "digits":
            raise EmwbError(refusal(self.spec, how))

    def _number_verdict(self) -> tuple[str, str]:
        """('whole' | 'digits' | 'unknown', how that was found out): the server's tokenizer, when it has one to ask,
        then (unless it makes one token of every number) the probe: a model may still write whole-number tokens its
        tokenizer no longer makes of text (the tiny model), and its reply to the probe shows it."""
        counts = self.client.token_counts(self.model, list(NUMBERS))
        split = [(n, c) for n, c in zip(NUMBERS, counts or []) if c > 1]
        if counts is not None and not split:
            return "whole", "the server's tokenizer has every number 0-100 as one token"
        got: dict[int, dict[str, float]] = {}
        body = {**self._request(), "messages": [{"role": "user", "content": PROBE}]}
        self.client.run([body], top_logprobs_of, got.__setitem__, desc=f"judge {self.spec}: number probe")
        top = sorted(got[0].items(), key=lambda kv: -kv[1])[:3]
        probe = f"asked for 100, its top tokens were {', '.join(repr(t) for t, _ in top)}"
        verdict = probe_verdict(got[0])
        if split and verdict != "whole":
            return "digits", f"the server's tokenizer makes {split[0][1]} tokens of {split[0][0]!r}; {probe}"
        return verdict, probe

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        bodies = [{**self._request(), "messages": [{"role": "user", "content": p}]} for p in prompts]
        (self.batches if self.batch else self.client).run(bodies, self.parser(), on_result, desc=f"judge {self.spec}")
