"""Detectors measured on labelled answers: `emwb labels sheet` writes a labelling sheet of a run's answers with a
detector's verdicts; a person (or a careful reader) fills `label` (yes / no: does the answer exhibit the
behaviour) and `reason` (one line); `emwb labels score` gives each detector's precision and recall against the
labels, per group (bias or question) and per kind of rule, with exact 95% intervals.

The sheet is stratified: up to `per_group` answers per (group, variant), seeded, so rare groups and every phase are
in it. A detector may describe its rules (`Detector.describe`: e.g. `presence` or `omission` per answer), which
the sheet carries and the score groups by. Labels are the reference; the detector is the instrument measured.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd

from emwb.analysis.intervals import exact_interval
from emwb.errors import EmwbError

LABELS = {"yes": 1, "y": 1, "1": 1, "true": 1, "no": 0, "n": 0, "0": 0, "false": 0}
SHEET_COLUMNS = ("answer_id", "variant", "group", "group_key", "kind", "context", "question", "answer", "detector",
                 "verdict", "label", "reason")


def sheet_rows(answers: pd.DataFrame, detector: str, verdicts: list, kinds: list[str], per_group: int,
               seed: int = 0) -> pd.DataFrame:
    """The sheet: answers the detector could read (a verdict, not None), up to `per_group` per (group key,
    variant), sampled with `seed`; `group_key` is the bias number where answers have one, else the question."""
    df = answers.copy()
    df["verdict"] = verdicts
    df["kind"] = kinds
    df = df[df["verdict"].notna()]
    key = df["bias_id"] if "bias_id" in df and df["bias_id"].notna().any() else df["question_id"]
    df["group_key"] = key.astype("Int64").astype(str) if key.name == "bias_id" else key.astype(str)
    picked = df.sample(frac=1.0, random_state=seed).groupby(["group_key", "variant"], sort=False).head(per_group)
    picked = picked.sort_values(["group_key", "variant"], kind="stable")
    out = pd.DataFrame({
        "answer_id": picked["answer_id"], "variant": picked["variant"], "group": picked["group"],
        "group_key": picked["group_key"], "kind": picked["kind"],
        "context": picked["bias_description"] if "bias_description" in picked else "",
        "question": picked["question"], "answer": picked["answer"], "detector": detector,
        "verdict": picked["verdict"].map(lambda v: "yes" if v >= 0.5 else "no"), "label": "", "reason": ""})
    return out.reset_index(drop=True)


def write_sheet(run_dir: str, detector: str, out: Path, per_group: int = 4, seed: int = 0) -> int:
    """Write `out` (CSV) for the finished answers and detections of every variant of a run; the row count."""
    from emwb.catalog.detectors import DETECTORS
    from emwb.layout import answers_file, detections_file
    from emwb.plan import plan_for
    from emwb.store import Run, read_jsonl

    if detector not in DETECTORS:
        raise EmwbError(f"--detector {detector}: not a registered detector ({DETECTORS.unknown(detector)})")
    run = Run.open(run_dir)
    plan = plan_for(run, keep=False)
    frames = []
    for v in plan.variants:
        path, dets = answers_file(run, v.id), detections_file(run, v.id)
        if not path.is_file() or not dets.is_file():
            raise EmwbError(f"{path.parent}: no finished answers and detections for {v.id}; run `emwb detect "
                            f"{run.dir}` first")
        a = pd.DataFrame(read_jsonl(path)).merge(pd.DataFrame(read_jsonl(dets)), on="answer_id", how="left")
        frames.append(a)
    answers = pd.concat(frames, ignore_index=True)
    if detector not in answers:
        raise EmwbError(f"{run.dir}: no answer was scored by {detector}; is it one of the evaluations' detectors?")
    d = DETECTORS.get(detector)
    records = answers.to_dict("records")
    kinds = d.describe(records) if d.describe else [""] * len(records)
    verdicts = [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in answers[detector]]
    sheet = sheet_rows(answers, detector, verdicts, kinds, per_group, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.to_csv(out, index=False, quoting=csv.QUOTE_NONNUMERIC)
    return len(sheet)


def read_labels(path: Path) -> pd.DataFrame:
    """A filled sheet (CSV, or JSONL with the same keys); every row labelled yes or no, or one line naming the
    first row that is not."""
    if not path.is_file():
        raise EmwbError(f"{path}: file not found")
    df = pd.read_json(path, lines=True) if path.suffix == ".jsonl" else pd.read_csv(path, keep_default_na=False)
    missing = [c for c in ("group_key", "verdict", "label") if c not in df]
    if missing:
        raise EmwbError(f"{path}: missing column(s) {', '.join(missing)} (write a sheet with `emwb labels sheet`)")
    for col in ("label", "verdict"):
        values = df[col].astype(str).str.strip().str.lower()
        bad = ~values.isin(list(LABELS))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise EmwbError(f"{path}: row {i + 1} has {col} {df[col].iloc[i]!r}; write yes or no")
        df[col] = values.map(LABELS)
    return df


def precision_recall(df: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """Per value of `by` (None: all rows): counts, precision TP/(TP+FP) and recall TP/(TP+FN) in % with exact 95%
    intervals (n/a where their denominator is 0), and the detector's and the labels' rates."""
    rows = []
    groups = [("all", df)] if by is None else list(df.groupby(by, sort=False))
    for key, g in groups:
        tp = int(((g["verdict"] == 1) & (g["label"] == 1)).sum())
        fp = int(((g["verdict"] == 1) & (g["label"] == 0)).sum())
        fn = int(((g["verdict"] == 0) & (g["label"] == 1)).sum())
        row = {by or "rows": key, "n": len(g), "labelled yes": int(g["label"].sum()), "flagged": tp + fp,
               "tp": tp, "fp": fp, "fn": fn}
        for name, num, den in (("precision", tp, tp + fp), ("recall", tp, tp + fn)):
            lo, hi = exact_interval(num, den)
            row.update({f"{name} %": 100 * num / den if den else math.nan, f"{name} ci_low": 100 * lo,
                        f"{name} ci_high": 100 * hi})
        row["agreement %"] = 100 * float((g["verdict"] == g["label"]).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def score_sheets(paths: list[Path]) -> dict[str, pd.DataFrame]:
    """{'all', 'kind', 'group'}: precision and recall over every labelled row, per kind of rule, per group."""
    df = pd.concat([read_labels(Path(p)) for p in paths], ignore_index=True)
    out = {"all": precision_recall(df, None), "group": precision_recall(df, "group_key")}
    if "kind" in df and df["kind"].astype(str).str.len().gt(0).any():
        out["kind"] = precision_recall(df, "kind")
    return out
