"""Judge throughput against a loopback OpenAI-compatible server with a fixed latency.

Prints judgments/s, requests made, beside a naive one-request-at-a-time loop; judges again with the same cache
to show that it makes zero requests; last, the ratio to the ideal N x latency / concurrency.

    .venv/bin/python benchmarks/judge_throughput.py --n 1000 --latency 0.1 --concurrency 32
    .venv/bin/python benchmarks/judge_throughput.py --small    # 50 answers, a few seconds (the fast suite runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp  # noqa: F401  (these imports are start-up, not judging throughput: made before the clock starts)
import openai
import tenacity  # noqa: F401
import tqdm  # noqa: F401

from emwb.catalog.rubric import load_rubric
from emwb.config import ExecConfig, JudgeConfig
from emwb.judge.base import JudgeContext
from emwb.judge.cache import JudgeCache
from emwb.judge.stage import RubricPlan, judge_answers


def answers(n: int) -> list[dict]:
    return [{"answer_id": f"a{i}", "evaluation": "bench", "question_id": f"q{i % 8}",
             "question": f"Question {i % 8}?", "answer": f"Answer number {i}."} for i in range(n)]


class ServerProcess:
    """The loopback judge in its own process, as a real server would be (not sharing our GIL)."""

    def __init__(self, latency: float):
        self.proc = subprocess.Popen([sys.executable, "-m", "emwb.judge.loopback", "--latency", str(latency)],
                                     stdout=subprocess.PIPE, text=True)
        self.base_url = self.proc.stdout.readline().strip()

    @property
    def requests(self) -> int:
        with urllib.request.urlopen(self.base_url + "/stats") as resp:
            return json.load(resp)["requests"]

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait()


def naive(server: ServerProcess, n: int) -> float:
    """judgments/s of a plain synchronous loop, one request at a time."""
    client = openai.OpenAI(api_key="loopback", base_url=server.base_url)
    t0 = time.perf_counter()
    for i in range(n):
        client.chat.completions.create(model="loopback", messages=[{"role": "user", "content": f"naive {i}"}],
                                       max_tokens=1, temperature=0, logprobs=True, top_logprobs=20, seed=0)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--naive-n", type=int, default=30)
    ap.add_argument("--small", action="store_true", help="50 answers, 5 naive requests: checks that it runs")
    args = ap.parse_args()
    if args.small:
        args.n, args.naive_n = 50, 5
    os.environ.setdefault("OPENAI_API_KEY", "loopback")
    rows = answers(args.n)
    rubrics = RubricPlan({"bench": (load_rubric("alignment"),)}, {})
    with ServerProcess(args.latency) as server, tempfile.TemporaryDirectory() as tmp:
        cfg = JudgeConfig(judges=["openai/loopback"], base_url=server.base_url)
        ctx = JudgeContext(cfg, ExecConfig(judge_concurrency=args.concurrency), "", Path(tmp))
        cache = JudgeCache(Path(tmp) / "cache.sqlite")
        t0 = time.perf_counter()
        judged, requested = judge_answers(rows, "openai/loopback", rubrics, ctx, cache)
        elapsed = time.perf_counter() - t0
        made = server.requests
        ideal = args.n * args.latency / args.concurrency
        naive_rate = naive(server, args.naive_n)
        before = server.requests
        t1 = time.perf_counter()
        _, requested2 = judge_answers(rows, "openai/loopback", rubrics, ctx, cache)
        rerun = time.perf_counter() - t1
        cache.close()
        print(f"answers judged:          {len(judged)} (requests made: {made}, new judgments: {requested})")
        print(f"concurrent judge:        {args.n / elapsed:.1f} judgments/s in {elapsed:.2f} s "
              f"(latency {args.latency * 1000:.0f} ms, concurrency {args.concurrency})")
        print(f"ideal:                   {args.n / ideal:.1f} judgments/s in {ideal:.2f} s")
        print(f"naive sequential loop:   {naive_rate:.1f} judgments/s ({args.naive_n} requests)")
        print(f"second run (cached):     {server.requests - before} requests, {requested2} new judgments, "
              f"{rerun:.2f} s")
        print(f"ratio to ideal:          {ideal / elapsed:.1%}")


if __name__ == "__main__":
    main()
