"""Batch judging through the OpenAI Batch API, against the loopback server's files and batches endpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from judge_helpers import all_judgments, kill_when, make_run

from emwb.context import context_of
from emwb.judge.cost import estimate_cost
from emwb.judge.loopback import LoopbackJudge
from emwb.judge.stage import run_judge_stage

BATCH = {"judge_batch_api": True, "batch_poll_s": 0.05, "batch_poll_max_s": 0.2}


def _reference(tmp_path, n: int) -> list[dict]:
    with LoopbackJudge() as live:
        ref = make_run(tmp_path, n, ["openai/judge-b"], live.base_url, name="live")
        run_judge_stage(context_of(ref))
        return all_judgments(ref, "openai/judge-b")


def test_batch_judging_under_30_percent_faults_matches_live_judging(tmp_path):
    want = _reference(tmp_path, 150)
    with LoopbackJudge(fail_rate=0.3, seed=5) as server:
        run = make_run(tmp_path, 150, ["openai/judge-b"], server.base_url, exec=BATCH, name="batched")
        run_judge_stage(context_of(run))
        assert server.store.created >= 3  # the failed lines went out again in new batches
        assert sum(server.faults.values()) >= 2 and set(server.served.values()) == {1} and len(server.served) == 300
        assert not any(p.get("messages") for p in server.params)  # nothing went to the live endpoint
        created = server.store.created
        run_judge_stage(context_of(run, force=True))
        assert server.store.created == created  # all cached
    assert all_judgments(run, "openai/judge-b") == want
    assert json.loads(next(run.path("judge_batches").glob("*.json")).read_text()) == {"batches": []}


def test_a_batch_judge_killed_while_waiting_resumes_its_batch(tmp_path):
    want = _reference(tmp_path, 60)
    with LoopbackJudge(batch_delay_s=4.0) as server:
        run = make_run(tmp_path, 60, ["openai/judge-b"], server.base_url, exec=BATCH, name="killed")
        cmd = [sys.executable, "-m", "emwb.cli", "judge", str(run.dir)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
        # the batch id is on disk before anything else happens: kill 0.3 s after the batch exists
        kill_when(proc, lambda: bool(server.store.batches), timeout_s=60, after_s=0.3)
        assert server.store.created == 1 and not server.served  # killed while the batch was in progress
        state = json.loads(next(run.path("judge_batches").glob("*.json")).read_text())
        assert state["batches"] == list(server.store.batches)
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        assert done.returncode == 0, done.stderr
        assert server.store.created == 1  # resumed, never sent again
        assert set(server.served.values()) == {1} and len(server.served) == 120
    assert all_judgments(run, "openai/judge-b") == want


def test_the_batch_estimate_is_half_the_live_one():
    live = estimate_cost("openai/gpt-4o-2024-08-06", ["x" * 4000] * 10, 1)
    batch = estimate_cost("openai/gpt-4o-2024-08-06", ["x" * 4000] * 10, 1, batch=True)
    assert batch.usd == pytest.approx(live.usd / 2) and "Batch API" in batch.line()
    assert live.input_tokens == 10 * (1000 + 7) and live.usd == pytest.approx((10070 * 2.5 + 10 * 10) / 1e6)
