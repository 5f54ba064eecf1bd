"""`openai/<model>`: OpenAI or any OpenAI-compatible server (e.g. `vllm serve`), asynchronous.

Bounded concurrency; retries with exponential backoff and jitter on 429, 5xx, timeouts and dropped
connections, honouring `Retry-After`; a permanent error (401, 403, 404, 400) stops with a clear message.
The API key is read from the environment only and never written anywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import random

from emwb.config import JudgeConfig
from emwb.errors import EmwbError
from emwb.judge.providers import OnResult, Provider, merge_logprobs

MAX_BACKOFF_S = 60.0


def _redact(text: str) -> str:
    key = os.environ.get("OPENAI_API_KEY")
    return text.replace(key, "***") if key and len(key) > 4 else text


def top_logprobs_of(response: dict) -> dict[str, float]:
    """{token: logprob} of the first generated token in a chat-completion response ({} when absent)."""
    choices = response.get("choices") or [{}]
    content = (choices[0].get("logprobs") or {}).get("content") or []
    if not content:
        return {}
    return merge_logprobs([(t["token"], t["logprob"]) for t in content[0].get("top_logprobs") or []])


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIProvider(Provider):
    def __init__(self, spec: str, model: str, cfg: JudgeConfig):
        self.spec, self.model, self.cfg = spec, model, cfg
        self.requests_made = 0

    @property
    def base_url(self) -> str | None:
        return self.cfg.base_urls.get(self.spec) or self.cfg.base_url or os.environ.get("OPENAI_BASE_URL")

    def params(self) -> dict:
        # The server is part of the judge: the same model name on another server is another judge.
        return {"model": self.model, "max_tokens": 1, "temperature": 0, "logprobs": True,
                "top_logprobs": self.cfg.top_logprobs, "seed": 0, "base_url": self.base_url}

    def _client(self):
        import openai

        base_url, key = self.base_url, os.environ.get("OPENAI_API_KEY")
        if not key and not base_url:
            raise EmwbError(f"judge {self.spec}: set OPENAI_API_KEY in the environment (or judge.base_url "
                            "for an OpenAI-compatible server)")
        return openai.AsyncOpenAI(api_key=key or "EMPTY", base_url=base_url, max_retries=0,
                                  timeout=self.cfg.timeout_s)

    async def _one(self, client, sem: asyncio.Semaphore, prompt: str) -> dict[str, float]:
        import openai

        retryable = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError,
                     openai.APITimeoutError)
        attempt = 0
        while True:
            async with sem:
                try:
                    self.requests_made += 1
                    # The raw JSON: building the SDK's response objects costs more CPU than the request.
                    raw = await client.chat.completions.with_raw_response.create(
                        model=self.model, messages=[{"role": "user", "content": prompt}], max_tokens=1,
                        temperature=0, logprobs=True, top_logprobs=self.cfg.top_logprobs, seed=0)
                    return top_logprobs_of(json.loads(raw.text))
                except (*retryable, json.JSONDecodeError) as exc:  # a garbled body counts as a server fault
                    error = exc
                except openai.APIStatusError as exc:
                    if exc.status_code >= 500 or exc.status_code in (408, 409, 429):
                        error = exc
                    else:
                        raise EmwbError(f"judge {self.spec}: permanent error {exc.status_code} from the API: "
                                        f"{_redact(str(exc.message))[:300]}") from None
            attempt += 1
            if attempt > self.cfg.max_retries:
                raise EmwbError(f"judge {self.spec}: giving up after {attempt} tries: "
                                f"{_redact(type(error).__name__ + ': ' + str(error))[:300]}")
            wait = _retry_after(error)
            if wait is None:
                wait = min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random())
            await asyncio.sleep(min(wait, MAX_BACKOFF_S))

    async def _run(self, prompts: list[str], on_result: OnResult) -> None:
        from tqdm import tqdm

        client = self._client()
        sem = asyncio.Semaphore(self.cfg.concurrency)
        bar = tqdm(total=len(prompts), desc=f"judge {self.spec}")

        async def task(i: int, p: str) -> None:
            on_result(i, await self._one(client, sem, p))
            bar.update(1)

        tasks = [asyncio.create_task(task(i, p)) for i, p in enumerate(prompts)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            bar.close()
            await client.close()

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        asyncio.run(self._run(prompts, on_result))
