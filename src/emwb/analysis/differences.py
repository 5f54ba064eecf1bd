"""The report's comparisons as paired differences: each variant against the base model, each phase against the
previous one, each organism against its control; per rate metric, with a CI, a p-value, the correction for the
table's many tests, and the effect each comparison could have detected (`emwb.analysis.paired`).

Variants answer the same prompts, so every difference is paired by prompt (evaluation, question, paraphrase).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from emwb.analysis.metrics import Metric, Settings, column_names, seeds_of
from emwb.analysis.paired import NAN, Difference, rate_difference

BASE = "base"
CORRECTION = "holm"  # statsmodels' name; a table's tests are corrected together


@dataclass(frozen=True)
class Pair:
    group: str
    reference: str
    kind: str       # "vs base", "vs previous phase", "vs control"


def prompt_keys(df: pd.DataFrame) -> np.ndarray:
    """The prompt each answer answers: evaluation, question and paraphrase (those columns the frame has)."""
    parts = [df[c].astype(str) for c in ("evaluation", "question_id", "paraphrase_index") if c in df]
    if not parts:
        return np.zeros(len(df), dtype=str)
    key = parts[0]
    for p in parts[1:]:
        key = key + "|" + p
    return key.to_numpy()


def comparison_pairs(groups: list[str], variants=(), controls: dict[str, str] | None = None) -> list[Pair]:
    """Each group against the base model (when it is a row), each evaluated phase against the organism's previous
    evaluated phase, and each organism against its control (`controls`: organism -> control organism)."""
    out = [Pair(g, BASE, "vs base") for g in groups if g != BASE and BASE in groups]
    phases: dict[str, list[tuple[int, str]]] = {}
    for v in variants:
        if v.organism is not None and v.step is None and v.edit is None and v.group in groups:
            phases.setdefault(v.organism, []).append((v.phase_index, v.group))
    for found in phases.values():
        ordered = [g for _, g in sorted(set(found))]
        out += [Pair(later, earlier, "vs previous phase") for earlier, later in zip(ordered, ordered[1:])]
    for organism, control in (controls or {}).items():
        if organism in groups and control in groups:
            out.append(Pair(organism, control, "vs control"))
    return out


def metric_difference(m: Metric, a: pd.DataFrame, b: pd.DataFrame, s: Settings) -> Difference:
    """Rate metric `m` on answers `a` minus on answers `b`, paired by prompt (NAN when either is unscored)."""
    if m.rate is None or not len(a) or not len(b):
        return NAN
    ca, cb = m.rate.counts(a, s), m.rate.counts(b, s)
    if ca is None or cb is None:
        return NAN
    return rate_difference(ca[0], ca[1], prompt_keys(a), cb[0], cb[1], prompt_keys(b), seeds_of(a), seeds_of(b),
                           permutations=s.permutations)


def _rows_of(df: pd.DataFrame, ev: str) -> pd.DataFrame:
    return df if not ev or "evaluation" not in df else df[df["evaluation"] == ev]


def difference_rows(df: pd.DataFrame, pairs: list[Pair], evaluations: dict[str, list[Metric]], s: Settings,
                    roles: tuple[str, ...] = ("narrow", "broad")) -> pd.DataFrame:
    """One row per (pair, rate metric of these roles with values): both rates and the paired difference, in
    points; `significant` after the Holm correction across the table's tests."""
    names = column_names(evaluations)
    rows = []
    for ev, ms in evaluations.items():
        sub = _rows_of(df, ev)
        for m in ms:
            if m.rate is None or (roles and m.role not in roles):
                continue
            for p in pairs:
                a, b = sub[sub["group"] == p.group], sub[sub["group"] == p.reference]
                d = metric_difference(m, a, b, s)
                if math.isnan(d.value):
                    continue
                rows.append({"group": p.group, "reference": p.reference, "comparison": p.kind, "evaluation": ev,
                             "metric": names[(ev, m.name)], "header": m.header, **difference_columns(d)})
    out = pd.DataFrame(rows)
    return corrected(out) if len(out) else out


def difference_columns(d: Difference, prefix: str = "") -> dict:
    """A difference as table columns (points): value, CI, p, MDE, the answers behind each arm."""
    return {f"{prefix}diff (pp)": 100 * d.value, f"{prefix}diff ci_low": 100 * d.ci_low,
            f"{prefix}diff ci_high": 100 * d.ci_high, f"{prefix}p": d.p_value, f"{prefix}mde (pp)": 100 * d.mde,
            f"{prefix}n": d.n_a, f"{prefix}reference n": d.n_b}


def corrected(rows: pd.DataFrame, p: str = "p", method: str = CORRECTION) -> pd.DataFrame:
    """`significant`: the rows whose p survives `method` (Holm or fdr_bh) across every row with a p."""
    out = rows.copy()
    ok = out[p].notna().to_numpy()
    flags = np.zeros(len(out), dtype=bool)
    if ok.any():
        flags[ok] = multipletests(out.loc[ok, p].to_numpy(dtype=float), alpha=0.05, method=method)[0]
    out["significant"] = [bool(f) if o else None for f, o in zip(flags, ok)]
    return out


def vs_base_columns(comp: pd.DataFrame, diffs: pd.DataFrame) -> pd.DataFrame:
    """The comparison table with each metric's difference from the base model (`<col>_vs_base`, its CI, p and
    MDE, in fractions like the rates) on every row that has one."""
    out = comp.copy()
    if not len(diffs):
        return out
    base = diffs[diffs["comparison"] == "vs base"]
    judge = "judge" in base and "judge" in out
    for metric in dict.fromkeys(base["metric"]):
        rows = base[base["metric"] == metric]
        keyed = {(r["group"], r["judge"] if judge else None): r for _, r in rows.iterrows()}
        for col, src in (("", "diff (pp)"), ("_ci_low", "diff ci_low"), ("_ci_high", "diff ci_high"),
                         ("_p", "p"), ("_mde", "mde (pp)")):
            scale = 1 if src == "p" else 100
            out[f"{metric}_vs_base{col}"] = [
                keyed[k][src] / scale if (k := (g, j if judge else None)) in keyed else math.nan
                for g, j in zip(out["group"], out["judge"] if judge else [None] * len(out))]
    return out


def display_differences(diffs: pd.DataFrame) -> pd.DataFrame:
    """The differences table as printed: one row per comparison and metric, points to one decimal."""
    from emwb.analysis.tables import ci_text, p_text

    rows = []
    for _, r in diffs.iterrows():
        rows.append({"organism": r["group"], "against": r["reference"], "comparison": r["comparison"],
                     **({"judge": r["judge"]} if "judge" in diffs and diffs["judge"].nunique() > 1 else {}),
                     "metric": r["header"], "difference (pp)": r["diff (pp)"],
                     "95% CI": ci_text(r["diff ci_low"], r["diff ci_high"]), "p": p_text(r["p"]),
                     f"significant ({CORRECTION})": r["significant"], "MDE (pp)": r["mde (pp)"],
                     "answers": int(r["n"]), "against answers": int(r["reference n"])})
    return pd.DataFrame(rows, dtype=object)


DIFFERENCES_NOTE = ("Each difference is paired by prompt (both variants answer the same prompts). 95% CI: from the two "
                    "rates' exact (Clopper-Pearson) intervals (MOVER), widened by a t interval over seeds where an arm "
                    "has several; p: two-sided permutation test with labels permuted within prompts (with several "
                    "seeds, the larger of that and a t test over seeds); significant: after the Holm correction across "
                    "this table; MDE: the rise over the reference rate that a test of these answer counts had 80% "
                    "power to detect at 5% (exact, Fisher's test on the pooled counts). Units: seeds, then answers, "
                    "the prompts fixed.")


def cell_tests(table: pd.DataFrame, df: pd.DataFrame, by: str, evaluations: dict[str, list[Metric]], s: Settings,
               roles: tuple[str, ...] = ("narrow", "broad"), method: str = "fdr_bh",
               untested: int = 0) -> pd.DataFrame:
    """A per-`by` table (rows: group, evaluation, `by` value) with each rate of these roles against the base
    model's on the same `by` value, paired by prompt (`<col>_vs_base`, CI, p, MDE in fractions) and
    `<col>_vs_base_sig`: whether its p survives `method` (Benjamini-Hochberg) across the whole table and the
    `untested` cells left out of it (counted with p = 1: the correction is never looser for leaving them out)."""
    out = table.copy()
    if not len(out) or BASE not in set(out["group"]):
        return out
    names = column_names(evaluations)
    tests = []
    for ev, ms in evaluations.items():
        sub = _rows_of(df, ev)
        base = sub[sub["group"] == BASE]
        for m in ms:
            if m.rate is None or m.role not in roles:
                continue
            col = names[(ev, m.name)]
            for c in ("", "_ci_low", "_ci_high", "_p", "_mde"):
                out[f"{col}_vs_base{c}"] = out.get(f"{col}_vs_base{c}", math.nan)
            for i, r in out[(out["evaluation"] == ev) & (out["group"] != BASE)].iterrows():
                a, b = sub[(sub["group"] == r["group"]) & (sub[by] == r[by])], base[base[by] == r[by]]
                d = metric_difference(m, a, b, s)
                if math.isnan(d.value):
                    continue
                out.loc[i, [f"{col}_vs_base{c}" for c in ("", "_ci_low", "_ci_high", "_p", "_mde")]] = [
                    d.value, d.ci_low, d.ci_high, d.p_value, d.mde]
                tests.append((i, col, d.p_value))
    ok = [(i, col, p) for i, col, p in tests if not math.isnan(p)]
    flags = multipletests([p for _, _, p in ok] + [1.0] * untested, alpha=0.05, method=method)[0] if ok else []
    for (i, col, _), flag in zip(ok, flags):
        out.loc[i, f"{col}_vs_base_sig"] = bool(flag)
    return out
