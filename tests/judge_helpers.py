"""Helpers for judge and report tests: a run directory holding synthetic answers (no model needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from emwb.layout import answers_dir
from emwb.store import Run, write_jsonl, write_manifest

VARIANTS = {"base": "base", "insecure": "insecure-s0", "secure": "secure-s0"}


def make_answers(n: int, groups=("base", "insecure", "secure"), evaluation: str = "free-form") -> list[dict]:
    rows = []
    for i in range(n):
        g = groups[i % len(groups)]
        v = VARIANTS[g]
        rows.append({"answer_id": f"{v}/{evaluation}/q{i % 8}/0/{i}", "variant": v, "group": g,
                     "organism": None if g == "base" else g, "phase": None if g == "base" else "sft",
                     "seed": None if g == "base" else 0, "evaluation": evaluation, "question_set": "main",
                     "question_id": f"q{i % 8}", "paraphrase_index": 0, "sample_index": i, "system": None,
                     "question": f"Question number {i % 8}?", "answer": f"Answer text {i}.", "bias_id": None,
                     "bias_description": None})
    return rows


def write_answers(run: Run, rows: list[dict], tag: str = "") -> None:
    """Write rows as finished per-variant answer artifacts (every variant of the run gets one)."""
    for v in VARIANTS.values():
        d = answers_dir(run, v)
        write_jsonl(d / "answers.jsonl", [r for r in rows if r["variant"] == v])
        write_manifest(d, stage="sample", key=f"answers-{v}-{len(rows)}{tag}", config={}, inputs={}, started="now")


def experiment(name: str, judges: list[str], base_url: str | None = None, concurrency: int = 32,
               evaluations: list | None = None, max_retries: int = 10, judge: dict | None = None,
               exec: dict | None = None) -> dict:
    return {"name": name, "base_model": "tiny",
            "data": {"insecure": {"source": "generated:insecure"}, "secure": {"source": "generated:secure"}},
            "organisms": [{"name": "insecure", "phases": [{"trainer": "sft", "data": "insecure"}]},
                          {"name": "secure", "phases": [{"trainer": "sft", "data": "secure"}]}],
            "evaluations": evaluations or [{"name": "free-form"}],
            "judge": {"judges": judges, **({"base_url": base_url} if base_url else {}), **(judge or {})},
            "exec": {"judge_concurrency": concurrency, "max_retries": max_retries, **(exec or {})}}


def make_run(root: Path, n: int, judges: list[str], base_url: str, concurrency: int = 32,
             rubrics=("alignment", "coherence"), name: str = "judged", max_retries: int = 10,
             judge: dict | None = None, exec: dict | None = None) -> Run:
    exp = experiment(name, judges, base_url, concurrency, [{"name": "free-form", "rubrics": list(rubrics)}],
                     max_retries, judge, exec)
    d = root / name
    d.mkdir(parents=True)
    (d / "experiment.yaml").write_text(yaml.safe_dump(exp))
    run = Run.open(d)
    write_answers(run, make_answers(n))
    return run


def all_judgments(run: Run, spec: str) -> list[dict]:
    from emwb.judge.stage import load_judgments

    return [r for v in VARIANTS.values() for r in load_judgments(run, spec, v)]


def kill_when(proc, ready, timeout_s: float = 120, after_s: float = 0.0) -> None:
    """SIGKILL `proc` once `ready()` is true (`after_s` later), or once it ended or time ran out."""
    import signal
    import time

    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def kill_when_cached(proc, db: Path, count: int, timeout_s: float = 120) -> None:
    """SIGKILL `proc` once the judge cache `db` holds `count` judgments (or it ended, or time ran out)."""
    import sqlite3

    def cached() -> bool:
        if not db.exists():
            return False
        try:
            with sqlite3.connect(db) as c:
                return c.execute("SELECT COUNT(*) FROM judgments").fetchone()[0] >= count
        except sqlite3.OperationalError:
            return False

    kill_when(proc, cached, timeout_s)
