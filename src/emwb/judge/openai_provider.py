"""`openai/<model>`: OpenAI or any OpenAI-compatible server (e.g. vLLM's), asynchronous.

The chat-completions endpoint over aiohttp (the OpenAI SDK's request building and httpx pool cost more
client CPU per judgment than the request itself: ~75% of ideal throughput on 2 cores, against >85% here).
Bounded concurrency (`exec.judge_concurrency`); tenacity retries 429, 5xx, timeouts, dropped connections
and garbled bodies with exponential backoff and jitter, honouring `Retry-After`; a permanent error (400,
401, 403, 404) stops at once with the provider's message. OPENAI_API_KEY (and OPENAI_BASE_URL,
OPENAI_ORG_ID) are read from the environment only; the key is never written anywhere.
"""

from __future__ import annotations

import asyncio
import json
import os

from emwb.errors import EmwbError
from emwb.judge.base import JudgeContext, OnResult, Provider, merge_logprobs

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


class _Garbled(Exception):
    """A 200 reply whose body is not a chat completion: a server fault, retried."""


class _Status(Exception):
    """An HTTP error reply: retried when transient (429, 408, 409, 5xx), else permanent."""

    def __init__(self, status: int, message: str, retry_after: float | None):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.retry_after = status, message, retry_after


def _retry_after(exc: BaseException | None) -> float | None:
    return getattr(exc, "retry_after", None)


def _retryable(exc: BaseException) -> bool:
    import aiohttp

    if isinstance(exc, _Status):
        return exc.status >= 500 or exc.status in (408, 409, 429)
    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, _Garbled))


def _wait(state) -> float:
    """Retry-After when the server sent one, else exponential backoff with full jitter."""
    from tenacity import wait_random_exponential

    after = _retry_after(state.outcome.exception())
    if after is not None:
        return min(after, MAX_BACKOFF_S)
    return wait_random_exponential(multiplier=0.5, max=MAX_BACKOFF_S)(state)


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


class OpenAIProvider(Provider):
    def __init__(self, spec: str, model: str, ctx: JudgeContext):
        self.spec, self.model, self.cfg, self.exec = spec, model, ctx.cfg, ctx.exec
        self.requests_made = 0

    @property
    def base_url(self) -> str | None:
        return self.cfg.base_urls.get(self.spec) or self.cfg.base_url or os.environ.get("OPENAI_BASE_URL")

    def params(self) -> dict:
        # The server is part of the judge: the same model name on another server is another judge.
        return {"model": self.model, "max_tokens": 1, "temperature": 0, "logprobs": True,
                "top_logprobs": self.cfg.top_logprobs, "seed": 0, "base_url": self.base_url}

    def _session(self):
        """An aiohttp session: the HTTP client with the least CPU per request (the benchmark's bottleneck)."""
        import aiohttp

        key = os.environ.get("OPENAI_API_KEY")
        if not key and not self.base_url:
            raise EmwbError(f"judge {self.spec}: set OPENAI_API_KEY in the environment (or judge.base_url "
                            "for an OpenAI-compatible server)")
        headers = {"Authorization": f"Bearer {key or 'EMPTY'}", "Content-Type": "application/json"}
        if os.environ.get("OPENAI_ORG_ID"):
            headers["OpenAI-Organization"] = os.environ["OPENAI_ORG_ID"]
        connector = aiohttp.TCPConnector(limit=self.exec.judge_concurrency)
        return aiohttp.ClientSession(headers=headers, connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=self.exec.timeout_s))

    async def _request(self, session, url: str, prompt: str) -> dict[str, float]:
        self.requests_made += 1
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 1,
                "temperature": 0, "logprobs": True, "top_logprobs": self.cfg.top_logprobs, "seed": 0}
        async with session.post(url, data=json.dumps(body)) as resp:
            raw = await resp.read()
            if resp.status != 200:
                after = resp.headers.get("retry-after")
                try:
                    wait = float(after) if after is not None else None
                except ValueError:
                    wait = None
                raise _Status(resp.status, _error_message(raw), wait)
        try:
            return top_logprobs_of(json.loads(raw))
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise _Garbled(str(exc)) from None

    async def _one(self, session, url: str, sem: asyncio.Semaphore, prompt: str) -> dict[str, float]:
        from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt

        retrying = AsyncRetrying(stop=stop_after_attempt(self.exec.max_retries + 1), wait=_wait,
                                 retry=retry_if_exception(_retryable))
        try:
            async for attempt in retrying:
                with attempt:
                    async with sem:
                        return await self._request(session, url, prompt)
        except RetryError as exc:
            error = exc.last_attempt.exception()
            raise EmwbError(f"judge {self.spec}: giving up after {exc.last_attempt.attempt_number} tries: "
                            f"{_redact(type(error).__name__ + ': ' + str(error))[:300]}") from None
        except _Status as exc:
            raise EmwbError(f"judge {self.spec}: permanent error {exc.status} from the API: "
                            f"{_redact(exc.message)[:300]}") from None
        raise AssertionError("unreachable")

    async def _run(self, prompts: list[str], on_result: OnResult) -> None:
        from tqdm import tqdm

        session = self._session()
        url = (self.base_url or "https://api.openai.com/v1").rstrip("/") + "/chat/completions"
        sem = asyncio.Semaphore(self.exec.judge_concurrency)
        bar = tqdm(total=len(prompts), desc=f"judge {self.spec}", mininterval=0.5)

        async def task(i: int, p: str) -> None:
            on_result(i, await self._one(session, url, sem, p))
            bar.update(1)

        tasks = [asyncio.create_task(task(i, p)) for i, p in enumerate(prompts)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            bar.close()
            await session.close()

    def run(self, prompts: list[str], on_result: OnResult) -> None:
        asyncio.run(self._run(prompts, on_result))
