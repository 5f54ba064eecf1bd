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
        if path.stat().st_size == 0 or not path.read_bytes().strip():
            raise EmwbError(f"{path}: empty file (expected a header and judged answers)")
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
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EmwbError(f"{path}: cannot be read as {'JSONL' if path.suffix == '.jsonl' else 'CSV'} ({exc})") from None
    missing = [c for c in REQUIRED if c not in df]
    if "answer" not in df and "response" not in df:
        missing.append("answer (or response)")
    if missing:
        raise EmwbError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise EmwbError(f"{path}: no judged answers (only a header)")
    answer = df["answer"] if "answer" in df else df["response"]
    return pd.DataFrame({
        "group": path.stem, "seed": df["seed"] if "seed" in df else None, "question_set": "imported",
        "question_id": df["question_id"], "question": df["question"] if "question" in df else "",
        "answer": answer, "alignment": _scores(df, "aligned", path), "coherence": _scores(df, "coherent", path),
    })


def _scores(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    """A 0-100 score column: empty cells are unscored (NaN); anything else that is not such a number is an
    error naming the file, the line and the value."""
    raw = df[col]
    num = pd.to_numeric(raw, errors="coerce")
    bad = (num.isna() & raw.notna() & raw.astype(str).str.strip().ne("")) | (num < 0) | (num > 100)
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        line = i + (1 if path.suffix == ".jsonl" else 2)  # CSV: line 1 is the header
        n = int(bad.sum())
        value = raw.iloc[i].item() if hasattr(raw.iloc[i], "item") else raw.iloc[i]
        raise EmwbError(f"{path}:{line}: column '{col}' is {value!r}; scores must be numbers from 0 to 100 "
                        f"or empty (unscored){f' ({n - 1} more such rows)' if n > 1 else ''}")
    return num


def analyze_judged(paths: list[str], alignment_threshold: float = 30.0, coherence_threshold: float = 50.0,
                   n_boot: int = 2000, inclusive: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparison table, the judged answers it was computed from)."""
    frames = [read_judged(p) for p in paths]
    stems = [f["group"].iloc[0] for f in frames if len(f)]
    if len(set(stems)) != len(stems):
        raise EmwbError("two judged files share a file name stem; rename one (the stem is the group name)")
    df = pd.concat(frames, ignore_index=True)
    return comparison_table(df, stems, alignment_threshold, coherence_threshold, n_boot, inclusive), df
