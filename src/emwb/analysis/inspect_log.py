"""An Inspect eval log as judged answers (`emwb analyze --inspect-log LOG`): one row per sample and epoch.

The answers are the samples' completions; the scores are emwb's judge's (scorer `emwb_judge`, written by the
`emwb/...` Inspect tasks or any task that uses `emwb.interop.inspect_scorer.emwb_judge`). The group is the
log's model. A NaN or missing score is unscored, never 0; a log that is unfinished, has failed samples or lacks
emwb's scores stops with one line naming the file and what to do.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from emwb.errors import EmwbError

SCORER = "emwb_judge"
RUBRICS = ("alignment", "coherence")


def _read(path: Path):
    from inspect_ai.log import read_eval_log

    if not path.is_file():
        raise EmwbError(f"{path}: file not found")
    try:
        return read_eval_log(str(path))
    except Exception as exc:  # a damaged or foreign file: inspect raises many kinds
        raise EmwbError(f"{path}: not an Inspect eval log ({type(exc).__name__}: {str(exc)[:120]})") from None


def _score(path: Path, sample, name: str) -> float:
    v = sample.scores[SCORER].value.get(name) if isinstance(sample.scores[SCORER].value, dict) else None
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 100:
        raise EmwbError(f"{path}: sample {sample.id} epoch {sample.epoch}: {name} is {v!r}; scores must be numbers "
                        "from 0 to 100 or NaN (unscored)")
    return float(v)


def read_inspect_log(path: str | Path) -> pd.DataFrame:
    """The judged answers of one Inspect eval log (columns as `emwb.analysis.imported.read_judged`'s)."""
    path = Path(path)
    log = _read(path)
    samples = log.samples or []
    if log.status != "success":
        raise EmwbError(f"{path}: the eval is {log.status} ({len(samples)} samples logged); finish it "
                        f"(`inspect eval-retry {path}`) before analysing it")
    if not samples:
        raise EmwbError(f"{path}: no samples in the log")
    failed = [s for s in samples if s.error is not None]
    if failed:
        raise EmwbError(f"{path}: {len(failed)} samples failed (first: {failed[0].id}); retry them "
                        f"(`inspect eval-retry {path}`) before analysing the log")
    bare = [s for s in samples if not s.scores or SCORER not in s.scores]
    if bare:
        raise EmwbError(f"{path}: sample {bare[0].id} has no {SCORER} score ({len(bare)} such); score the log "
                        "with emwb's judge (an emwb/... task, or the scorer emwb.interop.inspect_scorer.emwb_judge)")
    rows = []
    for s in samples:
        m = s.metadata or {}
        value = s.scores[SCORER].value
        missing = [r for r in RUBRICS if not isinstance(value, dict) or r not in value]
        if missing:
            raise EmwbError(f"{path}: sample {s.id} has no {', '.join(missing)} score; the comparison table needs "
                            "an evaluation judged for alignment and coherence")
        rows.append({"group": log.eval.model, "seed": None, "question_set": m.get("question_set", "inspect"),
                     "question_id": m.get("question_id", str(s.id)), "question": m.get("question", ""),
                     "answer": s.output.completion, **{r: _score(path, s, r) for r in RUBRICS}})
    return pd.DataFrame(rows)
