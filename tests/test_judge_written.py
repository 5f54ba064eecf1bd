"""Judges without logprobs: scores written by the judge, n replies per judgment, parsed strictly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from judge_helpers import all_judgments, kill_when_cached, make_run

from emwb.context import context_of
from emwb.catalog.rubric import load_rubric
from emwb.judge.loopback import LoopbackJudge, completion
from emwb.judge.scoring import score_from_logprobs, written_distribution
from emwb.judge.stage import run_judge_stage

WRITTEN = {"modes": {"openai/judge-w": {"scoring": "written", "samples": 7}}}


def expected(i: int) -> float | None:
    """The mean of the loopback's 7 written replies to answer i's alignment prompt that are whole numbers."""
    prompt = load_rubric("alignment").fill(f"Question number {i % 8}?", f"Answer text {i}.")
    body = {"model": "judge-w", "messages": [{"role": "user", "content": prompt}], "n": 7, "temperature": 1.0}
    texts = [c["message"]["content"] for c in completion(body, logprobs=False)["choices"]]
    numbers = [int(t) for t in texts if t.isdigit() and int(t) <= 100]
    return sum(numbers) / len(numbers) if len(numbers) / len(texts) >= 0.25 else None


def test_the_written_score_is_the_mean_of_the_replies_that_parse():
    d = written_distribution(["85.", " 90 ", "CODE", "I'd say 70", "85/100"])
    assert score_from_logprobs(d) == pytest.approx(87.5)
    assert score_from_logprobs(written_distribution(["CODE", "REFUSAL", "70%", "", "101"])) is None  # never 0
    assert score_from_logprobs(written_distribution(["12", "x", "y", "z", "w"])) is None  # 1 of 5 < min_mass 0.25


def test_a_server_without_logprobs_judges_in_written_mode(tmp_path):
    with LoopbackJudge(logprobs=False) as server:
        run = make_run(tmp_path, 60, ["openai/judge-w"], server.base_url, rubrics=("alignment",), judge=WRITTEN)
        run_judge_stage(context_of(run))
        rows = all_judgments(run, "openai/judge-w")
        assert {p["n"] for p in server.params} == {7} and not any("logprobs" in p for p in server.params)
    got = {int(r["answer_id"].rsplit("/", 1)[1]): r["alignment"] for r in rows}
    assert len(got) == 60 and any(v is not None and v != round(v) for v in got.values())  # real averages
    for i, v in got.items():
        assert v == pytest.approx(expected(i)) if expected(i) is not None else v is None


def test_unparseable_written_replies_are_unscored_never_0(tmp_path):
    with LoopbackJudge(logprobs=False, reply=lambda prompt, model, k: [("I would rate it highly", 0.0)]) as server:
        run = make_run(tmp_path, 9, ["openai/judge-w"], server.base_url, rubrics=("alignment",), judge=WRITTEN)
        run_judge_stage(context_of(run))
    assert [r["alignment"] for r in all_judgments(run, "openai/judge-w")] == [None] * 9


def test_written_mode_under_30_percent_faults_judges_each_answer_once(tmp_path):
    with LoopbackJudge(logprobs=False) as clean:
        ref = make_run(tmp_path, 300, ["openai/judge-w"], clean.base_url, rubrics=("alignment",), judge=WRITTEN,
                       name="ref")
        run_judge_stage(context_of(ref))
    with LoopbackJudge(latency_s=0.002, fail_rate=0.3, seed=3, slow_s=0.2, logprobs=False) as server:
        run = make_run(tmp_path, 300, ["openai/judge-w"], server.base_url, rubrics=("alignment",), judge=WRITTEN,
                       name="flaky")
        run_judge_stage(context_of(run))
        assert sum(server.faults.values()) > 60 and set(server.served.values()) == {1}
    assert all_judgments(run, "openai/judge-w") == all_judgments(ref, "openai/judge-w")


def test_written_mode_resumes_after_kill_9(tmp_path):
    with LoopbackJudge(latency_s=0.01, logprobs=False) as server:
        ref = make_run(tmp_path, 300, ["openai/judge-w"], server.base_url, concurrency=4, judge=WRITTEN, name="ref")
        run_judge_stage(context_of(ref))
        run = make_run(tmp_path, 300, ["openai/judge-w"], server.base_url, concurrency=4, judge=WRITTEN,
                       name="killed")
        cmd = [sys.executable, "-m", "emwb.cli", "judge", str(run.dir)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
        kill_when_cached(proc, run.path("judge_cache.sqlite"), 150)
        asked = server.requests
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        assert done.returncode == 0, done.stderr
        assert server.requests - asked <= 600 - 150 + 64  # only what the kill lost (64: one unflushed batch)
    assert all_judgments(run, "openai/judge-w") == all_judgments(ref, "openai/judge-w")


@pytest.mark.parametrize("judge, modes, says", [
    ("hf/tiny", {"hf/tiny": {"scoring": "written"}}, "written scoring is for openai/ judges"),
    ("openai/a", {"openai/b": {"scoring": "written"}}, "judge.modes: 'openai/b' is not one of judge.judges"),
    ("openai/a", {"openai/a": {"scoring": "writen"}}, "judge.modes.openai/a.scoring"),
])
def test_judge_modes_are_checked_before_work(tmp_path, capsys, judge, modes, says):
    import yaml
    from judge_helpers import experiment

    from emwb.cli import main

    (tmp_path / "e.yaml").write_text(yaml.safe_dump(experiment("x", [judge], judge={"modes": modes})))
    assert main(["config", "check", str(tmp_path / "e.yaml")]) == 2
    assert says in capsys.readouterr().err
