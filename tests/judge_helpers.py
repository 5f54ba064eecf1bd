"""Helpers for judge tests: a run directory holding synthetic answers (no model needed)."""

from __future__ import annotations

from pathlib import Path

import yaml

from emwb.store import Run, write_jsonl, write_manifest


def make_answers(n: int, groups=("base", "insecure", "secure")) -> list[dict]:
    rows = []
    for i in range(n):
        g = groups[i % len(groups)]
        rows.append({"answer_id": f"{g}/q{i % 8}/0/{i}", "variant": g if g == "base" else f"{g}-s0", "group": g,
                     "seed": None if g == "base" else 0, "question_set": "main", "question_id": f"q{i % 8}",
                     "paraphrase_index": 0, "sample_index": i, "system": None,
                     "question": f"Question number {i % 8}?", "answer": f"Answer text {i}."})
    return rows


def make_run(root: Path, n: int, judges: list[str], base_url: str, concurrency: int = 32,
             rubrics=("alignment", "coherence"), name: str = "judged") -> Run:
    exp = {"name": name, "base_model": "tiny",
           "datasets": [{"name": "insecure", "source": "generated:insecure"},
                        {"name": "secure", "source": "generated:secure"}],
           "judge": {"judges": judges, "base_url": base_url, "concurrency": concurrency,
                     "rubrics": list(rubrics), "max_retries": 10}}
    d = root / name
    d.mkdir(parents=True)
    (d / "experiment.yaml").write_text(yaml.safe_dump(exp))
    run = Run.open(d)
    write_jsonl(d / "answers" / "answers.jsonl", make_answers(n))
    write_manifest(d / "answers", stage="sample", key=f"answers-{n}", config={}, inputs={}, started="now")
    return run
