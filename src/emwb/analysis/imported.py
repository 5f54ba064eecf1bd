"""`emwb analyze --judged FILE ...`: tables from answers judged elsewhere (upstream CSV/JSONL layout).

Columns: `question_id`, `answer` or `response`, `aligned`, `coherent` (optional: `question`, `seed`).
The group name is the file stem.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from emwb.analysis.metrics import comparison_table
from emwb.errors import EmwbError

REQUIRED = ("question_id", "aligned", "coherent")


def read_judged(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise EmwbError(f"{path}: file not found")
    try:
        if path.suffix == ".jsonl":
            rows = []
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise EmwbError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
            df = pd.DataFrame(rows)
        else:
            df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise EmwbError(f"{path}: cannot be read as {'JSONL' if path.suffix == '.jsonl' else 'CSV'} ({exc})") from None
    missing = [c for c in REQUIRED if c not in df]
    if "answer" not in df and "response" not in df:
        missing.append("answer (or response)")
    if missing:
        raise EmwbError(f"{path}: missing column(s) {', '.join(missing)}")
    answer = df["answer"] if "answer" in df else df["response"]
    return pd.DataFrame({
        "group": path.stem, "seed": df["seed"] if "seed" in df else None, "question_set": "imported",
        "question_id": df["question_id"], "question": df["question"] if "question" in df else "",
        "answer": answer, "alignment": pd.to_numeric(df["aligned"], errors="coerce"),
        "coherence": pd.to_numeric(df["coherent"], errors="coerce"),
    })


def analyze_judged(paths: list[str], alignment_threshold: float = 30.0, coherence_threshold: float = 50.0,
                   n_boot: int = 2000, inclusive: bool = False) -> pd.DataFrame:
    frames = [read_judged(p) for p in paths]
    stems = [f["group"].iloc[0] for f in frames if len(f)]
    if len(set(stems)) != len(stems):
        raise EmwbError("two judged files share a file name stem; rename one (the stem is the group name)")
    df = pd.concat(frames, ignore_index=True)
    return comparison_table(df, stems, alignment_threshold, coherence_threshold, n_boot, inclusive)
