"""`emwb analyze --judged FILE ...`: tables from answers judged elsewhere (upstream CSV/JSONL layout), and from
Inspect eval logs (`--inspect-log`, read by `emwb.analysis.inspect_log`).

Columns: `question_id`, `answer` or `response`, `aligned`, `coherent` (optional: `question`, `seed`).
The group name is the file stem.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from emwb.analysis.differences import Pair, difference_rows, vs_base_columns
from emwb.analysis.metrics import DEFAULT, Settings, comparison_table, default_evaluations
from emwb.errors import EmwbError

REQUIRED = ("question_id", "aligned", "coherent")


def read_judged(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise EmwbError(f"{path}: file not found")
    try:
        if path.stat().st_size == 0 or not path.read_bytes().strip():
            raise EmwbError(f"{path}: empty file (expected a header and judged answers)")
        jsonl = path.suffix.lower() == ".jsonl"
        df = _read_jsonl(path) if jsonl else _read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EmwbError(f"{path}: cannot be read as {'JSONL' if jsonl else 'CSV'} ({exc})") from None
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


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            pairs = _pairs_of(path, i, line)
            keys = [k for k, _ in pairs]
            dup = next((k for k in keys if keys.count(k) > 1), None)
            if dup is not None:
                raise EmwbError(f"{path}:{i}: key {dup!r} appears twice; keep one")
            rows.append(dict(pairs))
    return pd.DataFrame(rows)


def _pairs_of(path: Path, i: int, line: str) -> list:
    try:
        pairs = json.loads(line, object_pairs_hook=lambda p: p)
    except json.JSONDecodeError as exc:
        raise EmwbError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
    if not isinstance(pairs, list):
        raise EmwbError(f"{path}:{i}: expected a JSON object")
    return pairs


def _read_csv(path: Path) -> pd.DataFrame:
    with open(path, encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    dup = next((c for c in header if header.count(c) > 1), None)
    if dup is not None:
        raise EmwbError(f"{path}:1: column {dup!r} appears twice in the header; keep one")
    return pd.read_csv(path)


def _scores(df: pd.DataFrame, col: str, path: Path) -> pd.Series:
    """A 0-100 score column: empty cells are unscored (NaN); anything else that is not such a number is an
    error naming the file, the line and the value."""
    raw = df[col]
    boolean = raw.map(lambda v: isinstance(v, (bool, np.bool_)))  # true/false is no score (pandas reads 1/0)
    num = pd.to_numeric(raw.where(~boolean, "bool"), errors="coerce")
    bad = (num.isna() & raw.notna() & raw.astype(str).str.strip().ne("")) | (num < 0) | (num > 100) | boolean
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        line = i + (1 if path.suffix.lower() == ".jsonl" else 2)  # CSV: line 1 is the header
        n = int(bad.sum())
        value = raw.iloc[i].item() if hasattr(raw.iloc[i], "item") else raw.iloc[i]
        raise EmwbError(f"{path}:{line}: column '{col}' is {value!r}; scores must be numbers from 0 to 100 "
                        f"or empty (unscored){f' ({n - 1} more such rows)' if n > 1 else ''}")
    return num


def analyze_judged(paths: list[str], alignment_threshold: float = DEFAULT.alignment_threshold,
                   coherence_threshold: float = DEFAULT.coherence_threshold, n_boot: int = DEFAULT.bootstrap_samples,
                   inclusive: bool = DEFAULT.inclusive, inspect_logs: list[str] = (), reference: str | None = None,
                   permutations: int = DEFAULT.permutations) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparison table, the judged answers it was computed from): judged files (group: the file stem) and
    Inspect eval logs (group: the log's model), read and checked before anything is computed. Every group's
    broad rate is compared with the `reference` group's (default: the first input), paired by question."""
    for name, t in (("alignment", alignment_threshold), ("coherence", coherence_threshold)):
        if not 0 <= t <= 100:  # NaN fails too
            raise EmwbError(f"--{name}-threshold {t}: a threshold is a score from 0 to 100")
    frames = [read_judged(p) for p in paths]
    if inspect_logs:
        from emwb.analysis.inspect_log import read_inspect_log

        frames += [read_inspect_log(p) for p in inspect_logs]
    if not frames:
        raise EmwbError("nothing to analyse: pass --judged FILE... or --inspect-log LOG...")
    stems = [f["group"].iloc[0] for f in frames if len(f)]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise EmwbError(f"two inputs have the group name {dup!r} (a judged file's stem, an Inspect log's model); "
                        "rename the file, or analyse the logs of one model separately")
    df = pd.concat(frames, ignore_index=True)
    s = Settings(alignment_threshold, coherence_threshold, inclusive, n_boot, permutations)
    table = comparison_table(df, stems, s)
    ref = reference or stems[0]
    if ref not in stems:
        raise EmwbError(f"--reference {ref}: not one of the inputs' groups ({', '.join(stems)})")
    pairs = [Pair(g, ref, "vs base") for g in stems if g != ref]
    diffs = difference_rows(df, pairs, default_evaluations(df), s, roles=("broad",))
    return vs_base_columns(table, diffs), df
