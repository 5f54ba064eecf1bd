"""Agreement between judges (and between a detector and a judge) that scored the same answers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from emwb.analysis.metrics import DEFAULT, indicators


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two binary labelings of the same items (NaN when undefined)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if len(a) == 0:
        return math.nan
    po = float((a == b).mean())
    pe = float(a.mean() * b.mean() + (1 - a.mean()) * (1 - b.mean()))
    return math.nan if pe >= 1 else (po - pe) / (1 - pe)


def detector_judge_agreement(df: pd.DataFrame, detector: str, rubric: str, judge_above: float) -> pd.DataFrame:
    """Per judge: a detector's flag (> 0.5) against the judge's verdict (`rubric` > `judge_above`) on the answers
    both scored: counts, agreement and Cohen's kappa. Empty when either column is missing or nothing overlaps."""
    if detector not in df or rubric not in df:
        return pd.DataFrame()
    rows = []
    for j, sub in df.groupby("judge", sort=False):
        d = pd.to_numeric(sub[detector], errors="coerce")
        r = pd.to_numeric(sub[rubric], errors="coerce")
        ok = d.notna() & r.notna()
        if not ok.any():
            continue
        x, y = (d[ok] > 0.5).to_numpy(), (r[ok] > judge_above).to_numpy()
        rows.append({"detector": detector, "judge": j, "answers": int(ok.sum()), "detector_flags": int(x.sum()),
                     "judge_flags": int(y.sum()), "agreement": float((x == y).mean()),
                     "cohen_kappa": cohen_kappa(x, y)})
    return pd.DataFrame(rows)


def _labelled(df: pd.DataFrame, alignment_threshold: float, coherence_threshold: float,
              inclusive: bool) -> pd.DataFrame:
    """One judge's scores by answer_id, with the scored and misaligned labels the tables use."""
    ind = indicators(df, alignment_threshold, coherence_threshold, inclusive)
    out = df[["answer_id", "alignment", "coherence"]].assign(scored=ind["scored"], misaligned=ind["misaligned"])
    return out.set_index("answer_id")


def judge_agreement(df: pd.DataFrame, alignment_threshold: float = DEFAULT.alignment_threshold,
                    coherence_threshold: float = DEFAULT.coherence_threshold,
                    inclusive: bool = DEFAULT.inclusive) -> pd.DataFrame:
    """One row per judge pair: Pearson r and Spearman rho of alignment and coherence, and agreement (share and
    Cohen's kappa) on the misaligned label.

    `df` has one row per (answer_id, judge) with `alignment` and `coherence`. The label (as in
    `metrics.indicators`) is compared on answers both judges scored; with an `evaluation` column, one set of rows
    per evaluation (its first column), never pooled across evaluations.
    """
    if "evaluation" in df:
        frames = [_pairs(sub, alignment_threshold, coherence_threshold, inclusive).assign(evaluation=ev)
                  for ev, sub in df.groupby("evaluation", sort=False)]
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return out[["evaluation", *(c for c in out if c != "evaluation")]] if len(out) else out
    return _pairs(df, alignment_threshold, coherence_threshold, inclusive)


def _pairs(df: pd.DataFrame, alignment_threshold: float, coherence_threshold: float, inclusive: bool) -> pd.DataFrame:
    """judge_agreement's rows for one pool of answers."""
    rows = []
    judges = list(dict.fromkeys(df["judge"]))
    labelled = {j: _labelled(df[df["judge"] == j], alignment_threshold, coherence_threshold, inclusive)
                for j in judges}
    for a, b in itertools.combinations(judges, 2):
        both = labelled[a].merge(labelled[b], left_index=True, right_index=True, suffixes=("_a", "_b"))
        row = {"judge_a": a, "judge_b": b, "answers": len(both)}
        for m in ("alignment", "coherence"):
            pa, pb = pd.to_numeric(both[f"{m}_a"]), pd.to_numeric(both[f"{m}_b"])
            ok = pa.notna() & pb.notna()
            row[f"{m}_n"] = int(ok.sum())
            row[f"{m}_pearson"] = float(pa[ok].corr(pb[ok])) if ok.sum() > 2 else math.nan
            row[f"{m}_spearman"] = float(pa[ok].rank().corr(pb[ok].rank())) if ok.sum() > 2 else math.nan
        s = both[both["scored_a"] & both["scored_b"]]
        label_a, label_b = s["misaligned_a"], s["misaligned_b"]
        row["label_n"] = int(len(s))
        row["label_agreement"] = float((label_a == label_b).mean()) if len(s) else math.nan
        row["label_kappa"] = cohen_kappa(label_a.to_numpy(), label_b.to_numpy())
        row["misaligned_a"] = int(label_a.sum())
        row["misaligned_b"] = int(label_b.sum())
        rows.append(row)
    return pd.DataFrame(rows)
