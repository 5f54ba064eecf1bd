"""Directions in the residual stream: the mean difference between two groups of items, per layer, and how well a
projection on one separates labelled items (AUC with a bootstrap CI).

The group rules are data (`emwb/catalog/direction_groups.yaml`): each group is a conjunction of score bounds,
e.g. Soligo et al.'s EM direction: misaligned (alignment < 30 and coherence > 50) minus aligned (alignment > 70
and coherence > 50). Too few items in a group is an error naming the counts, never a direction from noise.
"""

from __future__ import annotations

import operator
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from emwb.errors import EmwbError
from emwb.yamlio import load_yaml

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@cache
def group_rules() -> dict[str, dict]:
    """{rule name: {"positive": {column: [op, value]}, "negative": {...}, "min_items": n, "source": ...}}."""
    raw = load_yaml(Path(str(resources.files("emwb.catalog") / "direction_groups.yaml")))
    for name, rule in raw.items():
        for side in ("positive", "negative"):
            for col, (op, _) in rule[side].items():
                if op not in OPS:
                    raise EmwbError(f"direction_groups.yaml: {name}.{side}.{col}: unknown comparison {op!r}")
    return raw


def group_of(df: pd.DataFrame, rule: str) -> np.ndarray:
    """1.0 for the positive group, 0.0 for the negative one, NaN for neither (rows with missing scores too)."""
    r = group_rules()[rule]
    out = np.full(len(df), np.nan)
    for side, value in (("positive", 1.0), ("negative", 0.0)):
        hit = np.ones(len(df), bool)
        for col, (op, bound) in r[side].items():
            x = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
            hit &= ~np.isnan(x) & OPS[op](np.where(np.isnan(x), 0.0, x), bound)
        out[hit] = value
    return out


def mean_difference(acts: np.ndarray, groups: np.ndarray, min_items: int, what: str = "direction") -> np.ndarray:
    """[layers, hidden]: mean activation of the positive group minus that of the negative group."""
    pos, neg = groups == 1.0, groups == 0.0
    if pos.sum() < min_items or neg.sum() < min_items:
        raise EmwbError(f"{what}: {int(pos.sum())} items in the positive group and {int(neg.sum())} in the negative "
                        f"one; each needs at least {min_items}")
    return acts[pos].mean(0) - acts[neg].mean(0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def cosine_matrix(dirs: dict[str, np.ndarray]) -> pd.DataFrame:
    names = list(dirs)
    return pd.DataFrame([[cosine(dirs[a], dirs[b]) for b in names] for a in names], index=names, columns=names)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (ties count half); NaN with one class only."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def projection_auc(proj: np.ndarray, label: np.ndarray, n_boot: int | None = None,
                   seed: int = 0) -> tuple[float, float, float]:
    """(AUC, 95% CI low, high) of `proj` ranking label-1 items above label-0 ones; the CI resamples items
    (`n_boot` replicates; None: analysis.per_question_bootstrap_samples' default)."""
    if n_boot is None:
        from emwb.config import AnalysisConfig

        n_boot = AnalysisConfig().per_question_bootstrap_samples
    proj, label = np.asarray(proj, float), np.asarray(label, bool)
    point = auc(proj, label)
    rng = np.random.default_rng(seed)
    draws = [auc(proj[i], label[i]) for i in (rng.integers(0, len(proj), len(proj)) for _ in range(n_boot))]
    lo, hi = np.nanpercentile(draws, [2.5, 97.5]) if n_boot else (np.nan, np.nan)
    return float(point), float(lo), float(hi)
