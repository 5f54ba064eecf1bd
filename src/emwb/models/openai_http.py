"""Chat completions from OpenAI or any OpenAI-compatible server, many at once: what the `openai/` judge, the
`openai` sampler and the LLM writers of generated data share.

aiohttp (the SDK's request building costs more client CPU per call than the call itself at judge rates),
bounded concurrency, tenacity retries of 429, 5xx, timeouts, dropped connections and garbled bodies with
exponential backoff and jitter, honouring `Retry-After`; a permanent error (400, 401, 403, 404) stops at once
with the provider's message; a reply body is read up to MAX_BODY_BYTES. OPENAI_API_KEY (and OPENAI_ORG_ID) come from
the environment only; the key is never written anywhere. A server URL may name secrets as ${NAME}
(`emwb.secret_urls`); its credentials are sent as Basic auth in place of the key. `ReplyCache` keeps every reply in SQLite, keyed by the request.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from emwb import secret_urls
from emwb.errors import EmwbError
from emwb.sqlite_cache import BatchedTable

MAX_BACKOFF_S = 60.0
LONG_WAIT_S = 5.0  # a wait this long before a retry is logged
OPENAI_URL = "https://api.openai.com/v1"
MAX_BODY_BYTES = 16 * 2**20  # a chat completion with logprobs is kilobytes; a bigger body is a server fault


def redact(text: str) -> str:
    """`text` with the API key replaced by *** in any letter case (redact first, then cut to length)."""
    key = os.environ.get("OPENAI_API_KEY")
    return re.sub(re.escape(key), "***", text, flags=re.IGNORECASE) if key and len(key) > 4 else text


def base_url_or_default(base_url: str | None) -> str | None:
    """The server to call: the one given, else OPENAI_BASE_URL, else None (OpenAI itself)."""
    return base_url or os.environ.get("OPENAI_BASE_URL")


def sdk_server(base_url: str | None) -> dict:
    """The OpenAI SDK's base_url (secrets expanded, credentials removed) and the headers its credentials need."""
    url, basic = secret_urls.connect(base_url_or_default(base_url) or OPENAI_URL)
    return {"base_url": url, **({"default_headers": {"Authorization": basic}} if basic else {})}


class _Garbled(Exception):
    """A 200 reply whose body is not what was asked for: a server fault, retried."""


class _Status(Exception):
    """An HTTP error reply: retried when transient (429, 408, 409, 5xx), else permanent."""

    def __init__(self, status: int, message: str, retry_after: float | None):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message, self.retry_after = status, message, retry_after


def _retryable(exc: BaseException) -> bool:
    import aiohttp

    if isinstance(exc, _Status):
        return exc.status >= 500 or exc.status in (408, 409, 429)
    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, _Garbled))


def _wait(state) -> float:
    """Retry-After when the server sent one, else exponential backoff with full jitter."""
    from tenacity import wait_random_exponential

    after = getattr(state.outcome.exception(), "retry_after", None)
    if after is not None:
        return min(after, MAX_BACKOFF_S)
    return wait_random_exponential(multiplier=0.5, max=MAX_BACKOFF_S)(state)


def _describe(error: BaseException, timeout_s: float) -> str:
    """A failed attempt in words (a timeout has no message of its own)."""
    if isinstance(error, asyncio.TimeoutError):
        return f"no reply within {timeout_s:g} s (exec.timeout_s)"
    if isinstance(error, (_Garbled, _Status)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _error_message(body: bytes) -> str:
    """The error's message (the whole body when it is not the usual JSON); callers redact, then shorten."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:100_000].decode("utf-8", "replace")


async def _read_capped(resp) -> bytes:
    """The reply's body, refused as garbled past MAX_BODY_BYTES (said length first, then as it streams)."""
    too_big = f"the reply body is over {MAX_BODY_BYTES:,} bytes (emwb reads at most that)"
    if (resp.content_length or 0) > MAX_BODY_BYTES:
        raise _Garbled(too_big)
    body = bytearray()
    async for chunk in resp.content.iter_chunked(2**16):
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _Garbled(too_big)
    return bytes(body)


def _not_json(raw: bytes, content_type: str) -> str:
    """A 200 reply whose body is no JSON, in words (an HTML page: base_url is likely not the API's root)."""
    start = raw[:60].decode("utf-8", "replace").strip()
    html = "html" in content_type.lower() or start.lower().startswith(("<!doctype", "<html"))
    hint = "; an HTML page usually means base_url is not the API's root (it often ends in /v1)" if html else ""
    return f"the reply body was not JSON ({content_type or 'no content type'}, begins {start[:40]!r}){hint}"


class ChatCompletions:
    """POST /chat/completions for many request bodies: `run(bodies, parse, on_result)` calls
    `on_result(i, parse(response))` as each reply arrives; a reply `parse` rejects is retried as garbled."""

    def __init__(self, label: str, base_url: str | None, concurrency: int, max_retries: int, timeout_s: float,
                 stall_s: float = 600.0):
        self.label, self.base_url = label, base_url_or_default(base_url)
        self.concurrency, self.max_retries, self.timeout_s = concurrency, max_retries, timeout_s
        self.stall_s = stall_s
        self.requests_made = 0
        self.last_reply = time.monotonic()

    @property
    def server(self) -> str:
        """The server, fit to print (secrets masked)."""
        return secret_urls.display(self.base_url or OPENAI_URL)

    def _session(self, basic: str | None):
        """The HTTP session; `basic`: the Authorization header the server URL's credentials make, if any."""
        import aiohttp

        key = os.environ.get("OPENAI_API_KEY")
        if not key and not self.base_url:
            raise EmwbError(f"{self.label}: set OPENAI_API_KEY in the environment (or a base_url for an "
                            "OpenAI-compatible server)")
        headers = {"Authorization": basic or f"Bearer {key or 'EMPTY'}", "Content-Type": "application/json"}
        if os.environ.get("OPENAI_ORG_ID"):
            headers["OpenAI-Organization"] = os.environ["OPENAI_ORG_ID"]
        return aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=self.concurrency),
                                     timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def _request(self, session, url: str, body: dict, parse: Callable[[dict], object]):
        self.requests_made += 1
        async with session.post(url, data=json.dumps(body)) as resp:
            raw = await _read_capped(resp)
            if resp.status != 200:
                after = resp.headers.get("retry-after")
                try:
                    wait = float(after) if after is not None else None
                except ValueError:
                    wait = None
                raise _Status(resp.status, _error_message(raw), wait)
        try:
            reply = json.loads(raw)
        except ValueError:
            raise _Garbled(_not_json(raw, resp.headers.get("content-type", ""))) from None
        try:
            return parse(reply)
        except (ValueError, AttributeError, KeyError, TypeError, IndexError) as exc:
            raise _Garbled(str(exc)) from None

    def _waited(self, state) -> float:
        """The wait before a retry; a long one (a rate limit) is said, with its reason and length."""
        wait = _wait(state)
        if wait >= LONG_WAIT_S:
            from emwb.store import log

            why = redact(_describe(state.outcome.exception(), self.timeout_s))[:300]
            log(f"{self.label}: {why}; retrying in {wait:.0f} s")
        return wait

    async def _one(self, session, url: str, sem: asyncio.Semaphore, body: dict, parse):
        """One request and its retries, in one concurrency slot: a retry never queues behind the whole run."""
        from tenacity import AsyncRetrying, RetryError, retry_if_exception, stop_after_attempt

        retrying = AsyncRetrying(stop=stop_after_attempt(self.max_retries + 1), wait=self._waited,
                                 retry=retry_if_exception(_retryable))
        try:
            async with sem:
                async for attempt in retrying:
                    with attempt:
                        reply = await self._request(session, url, body, parse)
                        self.last_reply = time.monotonic()
                        return reply
        except RetryError as exc:
            what = _describe(exc.last_attempt.exception(), self.timeout_s)
            raise EmwbError(f"{self.label} at {self.server}: giving up after {exc.last_attempt.attempt_number} "
                            f"tries: {redact(what)[:300]}") from None
        except _Status as exc:
            raise EmwbError(f"{self.label}: permanent error {exc.status} from the API: "
                            f"{redact(exc.message)[:300]}") from None
        raise AssertionError("unreachable")

    async def _run(self, bodies: list[dict], parse, on_result, desc: str) -> None:
        from tqdm import tqdm

        server, basic = secret_urls.connect(self.base_url or OPENAI_URL)
        session = self._session(basic)
        url = server.rstrip("/") + "/chat/completions"
        sem = asyncio.Semaphore(self.concurrency)
        bar = tqdm(total=len(bodies), desc=desc, mininterval=0.5)

        async def task(i: int, body: dict) -> None:
            on_result(i, await self._one(session, url, sem, body, parse))
            bar.update(1)

        tasks = [asyncio.create_task(task(i, b)) for i, b in enumerate(bodies)]
        self.last_reply = time.monotonic()
        watchdog = asyncio.create_task(self._watch())
        try:
            done, _ = await asyncio.wait([asyncio.gather(*tasks), watchdog], return_when=asyncio.FIRST_COMPLETED)
            for d in done:
                d.result()  # the first error (a request's, or the watchdog's) stops the run
        finally:
            watchdog.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            bar.close()
            await session.close()

    def token_counts(self, model: str, texts: list[str]) -> list[int] | None:
        """How many tokens the server's tokenizer makes of each of `texts` (no special tokens), from its
        `/tokenize` at the server's root (vLLM's); None when it has none (OpenAI's API) or does not answer it."""
        return asyncio.run(self._token_counts(model, texts)) if texts else []

    async def _token_counts(self, model: str, texts: list[str]) -> list[int] | None:
        import aiohttp

        server, basic = secret_urls.connect(self.base_url or OPENAI_URL)
        root = server.rstrip("/")
        url = (root[:-3] if root.endswith("/v1") else root) + "/tokenize"
        limit = aiohttp.ClientTimeout(total=min(10.0, self.timeout_s))  # a probe: a server without it is not waited on

        async def count(session, text: str) -> int | None:
            body = {"model": model, "prompt": text, "add_special_tokens": False}
            try:
                async with session.post(url, data=json.dumps(body), timeout=limit) as resp:
                    raw = await _read_capped(resp)
                    return len(json.loads(raw)["tokens"]) if resp.status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError, _Garbled, ValueError, KeyError, TypeError):
                return None

        async with self._session(basic) as session:
            first = await count(session, texts[0])
            if first is None:
                return None
            rest = await asyncio.gather(*(count(session, t) for t in texts[1:]))
        return None if None in rest else [first, *rest]

    async def _watch(self) -> None:
        """Stop the run when the server has answered nothing for `stall_s` seconds."""
        while True:
            await asyncio.sleep(min(1.0, self.stall_s))
            quiet = time.monotonic() - self.last_reply
            if quiet >= self.stall_s:
                raise EmwbError(f"{self.label} at {self.server}: no reply for {quiet:.0f} s after "
                                f"{self.requests_made} requests (exec.stall_s); is the server up and reachable?")

    def run(self, bodies: list[dict], parse: Callable[[dict], object], on_result: Callable[[int, object], None],
            desc: str | None = None) -> None:
        if bodies:
            asyncio.run(self._run(bodies, parse, on_result, desc or self.label))


def choices_of(response: dict) -> list[dict]:
    """The choices of a chat completion; a reply without any is an error saying what came back instead."""
    choices = response.get("choices") if isinstance(response, dict) else None
    if not choices or not isinstance(choices, list):
        what = json.dumps(response, ensure_ascii=False)
        what = what if len(what) <= 200 else what[:200] + "..."
        raise ValueError(f"the reply held no choices (choices: {json.dumps(choices)}); it was {what}")
    return choices


def message_text(response: dict) -> dict:
    """{"text", "finish_reason", "tokens"} of the first choice of a chat completion."""
    choice = choices_of(response)[0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise TypeError("no message content")
    tokens = (response.get("usage") or {}).get("completion_tokens")
    return {"text": text, "finish_reason": choice.get("finish_reason") or "", "tokens": int(tokens or 0)}


class ReplyCache(BatchedTable):
    """Replies kept in SQLite by request key (a hash of the request), as JSON; each committed as it arrives."""

    def __init__(self, path: Path, batch: int = 1, interval_s: float = 0.0):
        super().__init__(path, "replies", ("key", "reply"), batch, interval_s)

    def get_many(self, keys: list[str]) -> dict[str, object]:
        return {k: json.loads(v) for k, v in super().get_many(keys).items()}

    def put(self, key: str, reply: object) -> None:
        super().put(key, json.dumps(reply))


def cached_completions(client: ChatCompletions, cache: ReplyCache, bodies: list[dict], keys: list[str],
                       parse: Callable[[dict], object] = message_text) -> list:
    """The parsed reply to every body: cached ones from `cache`, the rest requested (each cached as it arrives)."""
    have = cache.get_many(list(dict.fromkeys(keys)))
    todo = {k: b for k, b in zip(keys, bodies) if k not in have}
    order = list(todo)

    def keep(i: int, reply) -> None:
        cache.put(order[i], reply)
        have[order[i]] = reply

    client.run([todo[k] for k in order], parse, keep)
    return [have[k] for k in keys]
