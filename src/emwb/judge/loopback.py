"""A loopback OpenAI-compatible judge server for tests, benchmarks and dry runs.

`POST /v1/chat/completions` answers one token with `top_logprobs` that depend only on the prompt
(a deterministic score per prompt), after a fixed latency. Faults can be injected: a share of
requests get 429 (with Retry-After), 500, a dropped connection, or a slow reply. It counts requests
and successful replies per prompt. It also serves the Batch API's files and batches endpoints
(`emwb.judge.loopback_batch`). Binds to 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from emwb.judge.loopback_batch import BatchStore
from emwb.judge.numbers import PROBE


def prompt_score(prompt: str, model: str = "") -> int:
    """The integer 0..100 the loopback judge `model` gives a prompt (its top token)."""
    return int(hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest(), 16) % 101


def reply_logprobs(prompt: str, model: str = "", k: int = 20) -> list[tuple[str, float]]:
    """Top-k (token, logprob): 70% on the prompt's score, 20% on score+-5 (clamped), 10% on a non-number.

    A prompt that asks for "yes or no" gets P(yes) = score / 100 instead (the rest on "no"); one that offers
    double-quoted labels ("TRUE" or "FALSE") puts 80% on the label the score picks and the rest on the others.
    """
    from emwb.catalog.rubric import parse_labels

    if prompt == PROBE:  # emwb asks for 100 to find out whether a first token can carry a whole score
        return [("100", math.log(0.9)), ("Sure", math.log(0.06)), ("1", math.log(0.04))][:k]
    s = prompt_score(prompt, model)
    labels = parse_labels(prompt)
    if len(labels) >= 2:
        pick = labels[s % len(labels)]
        rest = 0.2 / (len(labels) - 1)
        return [(lab, math.log(0.8 if lab == pick else rest)) for lab in sorted(labels, key=lambda x: x != pick)][:k]
    if "yes or no" in prompt:
        p = min(max(s / 100, 0.005), 0.995)
        return [("yes", math.log(p)), ("no", math.log(1 - p))][:k]
    lo, hi = max(0, s - 5), min(100, s + 5)
    pairs = [(str(s), 0.7), (str(lo) if lo != s else "x", 0.1), (str(hi) if hi != s else "y", 0.1), ("CODE", 0.1)]
    return [(t, math.log(p)) for t, p in pairs][:k]


def completion(body: dict, logprobs: bool = True, reply=None) -> dict:
    """The loopback judge's chat completion for a request body: `n` choices (default 1); at temperature 0 each
    is the top token, else drawn from the reply distribution (seeded by the prompt and the choice's index);
    the top logprobs on the first choice when `logprobs`. `reply(prompt, model, k)` replaces `reply_logprobs`."""
    prompt, model = body["messages"][-1]["content"], body.get("model", "")
    pairs = (reply or reply_logprobs)(prompt, model, int(body.get("top_logprobs") or 20))
    top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in pairs]
    n = int(body.get("n") or 1)
    if float(body.get("temperature") or 0) > 0:
        weights = [math.exp(lp) for _, lp in pairs]
        texts = [random.Random(f"{model}\n{prompt}\n{i}").choices([t for t, _ in pairs], weights)[0] for i in range(n)]
    else:
        texts = [pairs[0][0]] * n
    choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": t},
                "logprobs": {"content": [{**top[0], "top_logprobs": top}]} if logprobs and i == 0 else None}
               for i, t in enumerate(texts)]
    return {"id": "cmpl-loopback", "object": "chat.completion", "created": int(time.time()),
            "model": model or "loopback", "choices": choices,
            "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": 1 + n}}


def serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) running `handler` in the background."""

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default (5) drops connections when a client opens many at once
        daemon_threads = True

        def handle_error(self, request, client_address):  # a client that went away is not an error here
            pass

    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class LoopbackServer:
    """Start (`start()` or `with`), stop and the base URL of a loopback server; `start` sets `self.server`."""

    server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        if getattr(self, "hang", None) is not None:
            self.hang.set()  # let hanging handlers end
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LoopbackJudge(LoopbackServer):
    def __init__(self, latency_s: float = 0.0, fail_rate: float = 0.0, seed: int = 0, slow_s: float = 0.5,
                 retry_after_s: float = 0.05, always_status: int | None = None, logprobs: bool = True,
                 hang: bool = False, reply=None, batch_delay_s: float = 0.2, tokenize: str | None = "whole",
                 respond=None):
        self.latency_s, self.fail_rate, self.slow_s, self.retry_after_s = latency_s, fail_rate, slow_s, retry_after_s
        self.always_status, self.logprobs = always_status, logprobs  # logprobs False: replies carry none
        self.reply = reply  # reply(prompt, model, k) -> [(token, logprob)], instead of reply_logprobs
        self.respond = respond  # respond(body) -> the whole chat completion, instead of `completion`
        # POST /tokenize (vLLM's, at the root): "whole" (a number is one token), "digits" (one per digit), None (404)
        self.tokenize = tokenize
        self.tokenized = 0
        self.store = BatchStore(batch_delay_s, fail_rate, seed)  # the Batch API: files and batches
        self.hang = threading.Event() if hang else None  # hang: never answer (until stopped)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self.served: Counter[str] = Counter()  # successful replies per prompt
        self.asked: Counter[str] = Counter()   # requests per prompt, answered or not
        self.params: list[dict] = []           # every answered request's parameters (its body less messages)
        self.server: ThreadingHTTPServer | None = None

    def _fault(self) -> str | None:
        with self.lock:
            self.requests += 1
            if self.rng.random() >= self.fail_rate:
                return None
            fault = self.rng.choice(["429", "500", "drop", "slow"])
            self.faults[fault] += 1
            return fault

    def start(self) -> "LoopbackJudge":
        self.server = serve(type("Handler", (JudgeHandler,), {"judge": self}))
        return self


class JudgeHandler(BaseHTTPRequestHandler):
    """The loopback judge's HTTP side: `judge` (set per server) holds its settings and counters."""

    protocol_version = "HTTP/1.1"
    judge: LoopbackJudge

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        judge = self.judge
        parts = self.path.rstrip("/").split("/")
        if "batches" in parts or "files" in parts:
            if self._failed(judge._fault()):
                return None
            with judge.lock:
                if parts[-2] == "batches" and parts[-1] in judge.store.batches:
                    return self._send(200, judge.store.retrieve(parts[-1], self._answer))
                if parts[-1] == "content" and parts[-2] in judge.store.files:
                    return self._send_bytes(judge.store.files[parts[-2]])
            return self._send(404, {"error": {"message": "no such batch or file"}})
        if self.path.rstrip("/").endswith("/stats"):
            with judge.lock:
                stats = {"requests": judge.requests, "faults": dict(judge.faults),
                         "served": sum(judge.served.values())}
            return self._send(200, stats)
        return self._send(404, {"error": {"message": "not found"}})

    def _answer(self, body: dict) -> dict:
        """A batch line's reply, counted like a live one (called under the judge's lock)."""
        self.judge.served[body["messages"][-1]["content"]] += 1
        return completion(body, self.judge.logprobs, self.judge.reply)

    def _send_bytes(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        judge = self.judge
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.rstrip("/").endswith(("/files", "/batches")):
            if self._failed(judge._fault()):
                return None
            with judge.lock:
                if self.path.rstrip("/").endswith("/files"):
                    return self._send(200, judge.store.upload(self.headers["Content-Type"], raw))
                return self._send(200, judge.store.create(json.loads(raw)))
        body = json.loads(raw or b"{}")
        if self.path.rstrip("/") == "/tokenize":
            return self._tokenize(body)
        with judge.lock:
            judge.asked[(body.get("messages") or [{}])[-1].get("content", "")] += 1
        fault = judge._fault()
        if judge.hang is not None:
            judge.hang.wait()
            return None
        time.sleep(judge.latency_s)
        if self._failed(fault):
            return None
        with judge.lock:
            judge.served[body["messages"][-1]["content"]] += 1
            judge.params.append({k: v for k, v in body.items() if k != "messages"})
        if judge.respond is not None:
            return self._send(200, judge.respond(body))
        return self._send(200, completion(body, judge.logprobs, judge.reply))

    def _tokenize(self, body: dict) -> None:
        """vLLM's POST /tokenize: a number is one token ("whole") or one per character ("digits"), else 404."""
        judge = self.judge
        if judge.tokenize is None:
            return self._send(404, {"detail": "Not Found"})
        with judge.lock:
            judge.tokenized += 1
        text = str(body.get("prompt", ""))
        pieces = list(text) if judge.tokenize == "digits" else ([text] if text else [])
        tokens = [int(hashlib.sha256(p.encode()).hexdigest()[:6], 16) for p in pieces]
        return self._send(200, {"count": len(tokens), "max_model_len": 4096, "tokens": tokens, "token_strs": None})

    def _failed(self, fault: str | None) -> bool:
        """Answer with the configured status or the drawn fault; True when the request got no reply."""
        judge = self.judge
        if judge.always_status:
            self._send(judge.always_status, {"error": {"message": "Incorrect API key provided: "
                                                       + self.headers.get("Authorization", "")}})
            return True
        if fault == "429":
            self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": str(judge.retry_after_s)})
        elif fault == "500":
            self._send(500, {"error": {"message": "server error"}})
        elif fault == "drop":
            self.close_connection = True
            self.connection.close()
        elif fault == "slow":
            time.sleep(judge.slow_s)
            return False
        return fault is not None


def main() -> None:
    """`python -m emwb.judge.loopback`: print the base URL, serve until killed (GET /v1/stats counts)."""
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--fail-rate", type=float, default=0.0)
    args = ap.parse_args()
    j = LoopbackJudge(args.latency, args.fail_rate).start()
    print(j.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        j.stop()


if __name__ == "__main__":
    main()
