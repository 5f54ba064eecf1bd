"""Intervals for rates and for means over prompt groups, right at every count (0/n and n/n included).

Every estimate names its estimand and the units its interval accounts for, outermost first:
- A **rate** (misaligned among coherent answers, a detector's flag rate, ...) pools the answers to the
  evaluation's *fixed* prompts. One seed: the rate of this fine-tuned model on these prompts; the interval is
  the exact (Clopper-Pearson) binomial interval of the pooled counts, valid at 0/n and n/n and conservative
  when the prompts' rates differ (a sum of Bernoullis of unequal rates varies less than a binomial). Several
  seeds: the mean over fine-tuning seeds (what another run would show); the interval is the union of that exact
  interval and a t interval over the seeds' rates (k - 1 degrees of freedom; its side towards 1, for rates below a
  half, reaching as far as the log-odds scale's: seeds' rates are skewed), so seed-to-seed variation widens it and
  it never has zero width.
- A **mean over groups** (biases, questions; each weighs the same) generalises over groups like these from 10
  groups up: the interval is the union of a t interval over the groups' rates (G - 1 degrees of freedom; each
  side stretched to the square-root scale's bound, for skewed rates), the fixed-groups interval built from each group's exact interval
  (MOVER: the groups' half-widths added in quadrature), so it is never narrower than the answers allow, and with
  several seeds the seeds' spread (their means' t intervals, and both sources' variances added). With fewer than
  10 groups no interval over groups is trustworthy (5 skewed rates leave a t interval well short of its level), so
  the mean is about these groups: the fixed-groups interval (and the seeds' spread), and the units say so.

Library intervals (statsmodels' `proportion_confint`, scipy's t) do the work; `benchmarks/interval_coverage.py`
measures the coverage of each on simulated clustered data. The percentile bootstrap these replace had zero width
at 0/n and n/n and covered a rare rate in a quarter of simulated runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

LEVEL = 0.95

RATE_UNITS = "seeds, then answers (the evaluation's prompts fixed)"
RATE_ESTIMAND = ("rate over the evaluation's prompts: exact (Clopper-Pearson) interval of the pooled answers; with "
                 "several seeds, the mean over seeds, widened by a t interval over the seeds' rates")
GROUP_UNITS = "seeds, then groups, then answers"
FIXED_GROUP_UNITS = "seeds, then answers within these groups (fewer than 10: not generalised over groups)"
GROUP_ESTIMAND = ("mean over groups like these (each weighs the same): t interval over the groups' rates, never "
                  "narrower than the fixed-groups exact interval")


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its 95% interval; `units`: what the interval accounts for, outermost first."""

    value: float
    ci_low: float
    ci_high: float
    n_seeds: int
    units: str = ""
    method: str = ""

    @property
    def single_seed(self) -> bool:
        return self.n_seeds <= 1


def exact_interval(x: float, n: float, level: float = LEVEL) -> tuple[float, float]:
    """The Clopper-Pearson interval of x successes in n trials ((nan, nan) when n is 0)."""
    if n <= 0:
        return math.nan, math.nan
    lo, hi = proportion_confint(int(round(x)), int(round(n)), alpha=1 - level, method="beta")
    return float(lo), float(hi)


def exact_intervals(xs: np.ndarray, ns: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Clopper-Pearson intervals of many counts at once (every n > 0)."""
    lo, hi = proportion_confint(np.rint(xs).astype(int), np.rint(ns).astype(int), alpha=1 - level, method="beta")
    return np.asarray(lo, float), np.asarray(hi, float)


SMALL = 10  # fewer groups than this: a mean over groups is about these groups (fixed), not groups like them


def group_df(k: int) -> int:
    """Degrees of freedom of a t interval over k groups' rates (k - 1; used from `SMALL` groups up)."""
    return max(1, k - 1)


def t_interval(values: np.ndarray, level: float = LEVEL, df: float | None = None) -> tuple[float, float]:
    """mean +- t(df) * sd / sqrt(k) over `values` (df: k - 1 unless given; (nan, nan) with fewer than 2)."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan
    df = len(values) - 1 if df is None else df
    half = float(stats.t.ppf(0.5 + level / 2, df)) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def logit_t_interval(rates: np.ndarray, level: float = LEVEL, df: float | None = None) -> tuple[float, float]:
    """A t interval over rates on the log-odds scale, mapped back (0 and 1 moved in to 0.001 and 0.999): its longer
    tail on the side the rates are skewed towards covers the mean where the plain one falls short."""
    r = np.clip(np.asarray(rates, float), 1e-3, 1 - 1e-3)
    lo, hi = t_interval(np.log(r / (1 - r)), level, df)
    if math.isnan(lo):
        return lo, hi
    return float(1 / (1 + math.exp(-lo))), float(1 / (1 + math.exp(-hi)))


def sqrt_t_interval(rates: np.ndarray, level: float = LEVEL, df: float | None = None) -> tuple[float, float]:
    """A t interval over rates whose long tail is stretched: its upper bound from the square roots of the rates
    (squared back), its lower bound from those of 1 - rate. On the side a skewed set of rates (most near 0, a few
    high) is skewed towards, it reaches further than the plain t interval; the other side stays near it (zeros
    need no nudging, unlike the log-odds)."""
    x = np.clip(np.asarray(rates, float), 0, 1)
    _, hi = t_interval(np.sqrt(x), level, df)
    _, hi_complement = t_interval(np.sqrt(1 - x), level, df)
    if math.isnan(hi):
        return hi, hi
    return 1 - min(1.0, hi_complement) ** 2, min(1.0, hi) ** 2


def spread_interval(rates: np.ndarray, level: float = LEVEL, df: float | None = None) -> tuple[float, float]:
    """Over seeds' rates (k - 1 df): the t interval, its side towards 1 (rates below a half) or towards 0 (above)
    stretched to the log-odds scale's bound (seeds' rates are skewed that way; the other side of a log-odds
    interval would target the median, not the mean)."""
    lo, hi = t_interval(rates, level, df)
    llo, lhi = logit_t_interval(rates, level, df)
    if math.isnan(lo) or math.isnan(llo):
        return lo, hi
    return (lo, max(hi, lhi)) if np.mean(rates) < 0.5 else (min(lo, llo), hi)


def groups_interval(rates: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """Over groups' rates (`group_df` degrees of freedom): the t interval, each side stretched to the
    square-root interval's (`sqrt_t_interval`)."""
    df = group_df(len(rates))
    return union(t_interval(rates, level, df), sqrt_t_interval(rates, level, df))


def union(*intervals: tuple[float, float], lower: float = 0.0, upper: float = 1.0) -> tuple[float, float]:
    """The smallest interval holding every given one (missing ones ignored), clipped to [lower, upper]."""
    found = [(lo, hi) for lo, hi in intervals if not (math.isnan(lo) or math.isnan(hi))]
    if not found:
        return math.nan, math.nan
    return max(lower, min(lo for lo, _ in found)), min(upper, max(hi for _, hi in found))


def _binary(*arrays: np.ndarray) -> bool:
    return all(np.isin(a, (0.0, 1.0)).all() for a in arrays)


def seed_keys(seeds: np.ndarray) -> list:
    return list(dict.fromkeys(np.asarray(seeds).tolist()))


def ratio_ci(num: np.ndarray, den: np.ndarray, seeds: np.ndarray, n_boot: int | None = None,
             level: float = LEVEL, rng_seed: int = 0) -> Estimate:
    """sum(num) / sum(den) over answers (num and den 0/1 indicators, num only where den) with its interval (see
    the module docstring); n_boot <= 0: the point estimate alone (no interval; None or more: the interval)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    keys = seed_keys(seeds)
    x, n = float(num.sum()), float(den.sum())
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan, len(keys), RATE_UNITS)
    value = x / n
    if n_boot is not None and n_boot <= 0:
        return Estimate(value, math.nan, math.nan, len(keys), RATE_UNITS)
    if not _binary(num, den) or (num > den).any():
        raise ValueError("ratio_ci counts answers: num and den must be 0/1 indicators with num only where den")
    exact = exact_interval(x, n, level)
    per_seed = [num[seeds == k].sum() / d for k in keys if (d := den[seeds == k].sum()) > 0]
    if len(per_seed) < 2:
        return Estimate(value, *exact, len(keys), RATE_UNITS, "exact (Clopper-Pearson)")
    lo, hi = union(exact, spread_interval(np.array(per_seed), level))
    return Estimate(value, lo, hi, len(keys), RATE_UNITS, f"exact, widened by t over {len(per_seed)} seeds")


def group_rates(num: np.ndarray, den: np.ndarray, groups: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
    """(group keys with den > 0, their successes, their trials), in first-seen order (at once: linear in the
    answers however many groups there are)."""
    codes, uniques = pd.factorize(np.asarray(groups), sort=False)
    xs = np.bincount(codes, weights=np.asarray(num, float), minlength=len(uniques))
    ns = np.bincount(codes, weights=np.asarray(den, float), minlength=len(uniques))
    keep = ns > 0
    return np.asarray(uniques, dtype=object)[keep].tolist(), xs[keep], ns[keep]


def fixed_groups_interval(xs: np.ndarray, ns: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The mean of the groups' rates with the groups held fixed: each group's exact interval, their distances
    from the group's rate added in quadrature (MOVER, Zou & Donner 2008), divided by the number of groups."""
    rates = xs / ns
    lo, hi = exact_intervals(xs, ns, level)
    mean = rates.mean()
    below = math.sqrt(((rates - lo) ** 2).sum()) / len(rates)
    above = math.sqrt(((hi - rates) ** 2).sum()) / len(rates)
    return mean - below, mean + above


def two_level_interval(value: float, rates: np.ndarray, seed_means: np.ndarray, level: float = LEVEL
                       ) -> tuple[float, float]:
    """value +- t * sqrt(var over groups / G + var over seeds / k): the groups' spread and the seeds' shift of every
    group are separate sources (a seed moves all groups at once, so the groups' spread does not show it), at the
    fewer units' degrees of freedom (conservative: Welch-Satterthwaite's fell short in simulation)."""
    g, k = len(rates), len(seed_means)
    a, b = rates.var(ddof=1) / g, seed_means.var(ddof=1) / k
    if a + b <= 0:
        return value, value
    df = min(group_df(g), k - 1)
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(a + b)
    return value - half, value + half


def mean_of_ratios_ci(num: np.ndarray, den: np.ndarray, strata: np.ndarray, n_boot: int | None = None,
                      level: float = LEVEL, rng_seed: int = 0, seeds: np.ndarray | None = None) -> Estimate:
    """The mean over groups (`strata`: a group per answer; groups with no trial left out) of each group's rate,
    with the interval of a mean over groups like these (module docstring); n_boot <= 0: no interval."""
    num, den, strata = np.asarray(num, float), np.asarray(den, float), np.asarray(strata)
    seeds = np.zeros(len(num), dtype=int) if seeds is None else np.asarray(seeds)
    keys, xs, ns = group_rates(num, den, strata)
    n_seeds = len(seed_keys(seeds))
    if not keys:
        return Estimate(math.nan, math.nan, math.nan, n_seeds, GROUP_UNITS)
    rates = xs / ns
    value = float(rates.mean())
    if n_boot is not None and n_boot <= 0:
        return Estimate(value, math.nan, math.nan, n_seeds, GROUP_UNITS)
    if not _binary(num, den) or (num > den).any():
        raise ValueError("mean_of_ratios_ci counts answers: num and den must be 0/1 indicators")
    fixed = len(keys) < SMALL  # too few groups to generalise over: the claim is about these groups
    parts = [fixed_groups_interval(xs, ns, level)] + ([] if fixed else [groups_interval(rates, level)])
    means = []
    for s in seed_keys(seeds) if n_seeds > 1 else ():  # seeds first: the seeds' own means over groups
        mask = seeds == s
        _, sx, sn = group_rates(num[mask], den[mask], strata[mask])
        if len(sn):
            means.append((sx / sn).mean())
    if len(means) >= 2:
        parts.append(spread_interval(np.array(means), level))
        if not fixed:
            parts.append(two_level_interval(value, rates, np.array(means), level))
    lo, hi = union(*parts)
    if fixed:
        return Estimate(value, lo, hi, n_seeds, FIXED_GROUP_UNITS, f"these {len(keys)} groups: exact per group")
    return Estimate(value, lo, hi, n_seeds, GROUP_UNITS, f"t over {len(keys)} groups, never narrower than exact")
