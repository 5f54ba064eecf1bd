"""Paired differences between variants that answer the same prompts: a CI, a p-value and the effect each
comparison could have detected.

- **Rates over the same fixed prompts** (`rate_difference`): the difference of the two pooled rates. Its CI
  combines the two rates' own intervals (MOVER: with one seed, Clopper-Pearson limits, i.e. Newcombe's method with
  exact in place of Wilson limits, so it stays right when a rate is rare; with several seeds, the seed-widened
  interval of `ratio_ci`) and is widened by a t interval over the seeds' rates. The p-value is a permutation test stratified by prompt: under the null
  both variants' answers to a prompt are exchangeable, so labels are permuted within each prompt only (the
  resampling scipy's `permutation_test` has no strata for). With several seeds it is the larger of that p and a
  t test over the seeds' rates (answers of one seed are not independent draws of the organism).
- **Means over groups** (`group_difference`): the groups' own differences, tested by sign flips over groups
  (exact up to 2^16 flips) with a t interval, never narrower than the fixed-groups exact one.
- The minimum detectable effect comes from `emwb.analysis.power`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from emwb.analysis.intervals import (
    LEVEL,
    SMALL,
    Estimate,
    exact_interval,
    group_df,
    group_rates,
    ratio_ci,
    seed_keys,
    t_interval,
    union,
)
from emwb.analysis.power import group_mde, rate_mde, sign_flip_floor

PERMUTATIONS = 2000
DIFF_UNITS = "seeds, then answers, permuted within prompts (the prompts fixed and shared)"
GROUP_DIFF_UNITS = "groups (sign flips), then answers"
FIXED_GROUP_DIFF_UNITS = "answers within these groups (fewer than 10: permuted within groups, not generalised)"


@dataclass(frozen=True)
class Difference:
    """a - b (fractions), its 95% CI, the two-sided p, and the rise over b that had 80% power at 5% (`mde`)."""

    value: float
    ci_low: float
    ci_high: float
    p_value: float
    mde: float
    n_a: int
    n_b: int
    units: str = DIFF_UNITS
    p_floor: float = 0.0        # the smallest p this design allows (permutations or flips)

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p_value) and self.p_value < 0.05


NAN = Difference(math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0)


def mover(xa: float, na: float, xb: float, nb: float, level: float = LEVEL) -> tuple[float, float]:
    """CI of xa/na - xb/nb from the two exact intervals (MOVER; Zou & Donner 2008)."""
    pa, pb = xa / na, xb / nb
    (la, ua), (lb, ub) = exact_interval(xa, na, level), exact_interval(xb, nb, level)
    d = pa - pb
    return d - math.hypot(pa - la, ub - pb), d + math.hypot(ua - pa, pb - lb)


def mover_of(a: Estimate, b: Estimate) -> tuple[float, float]:
    """CI of a.value - b.value from the two rates' own intervals (MOVER): with one seed each, their exact
    intervals (`mover`); with several seeds, the intervals that already account for the seeds (`ratio_ci`)."""
    d = a.value - b.value
    return (d - math.hypot(a.value - a.ci_low, b.ci_high - b.value),
            d + math.hypot(a.ci_high - a.value, b.value - b.ci_low))


def permutation_p(num: np.ndarray, den: np.ndarray, in_a: np.ndarray, strata: np.ndarray,
                  permutations: int = PERMUTATIONS, rng_seed: int = 0) -> float:
    """Two-sided p of sum(num[a])/sum(den[a]) - sum(num[b])/sum(den[b]), the arms' labels permuted within
    strata; (1 + as extreme) / (1 + permutations)."""
    num, den, in_a = np.asarray(num, float), np.asarray(den, float), np.asarray(in_a, bool)

    def stat(xa, na, x, n):
        with np.errstate(invalid="ignore", divide="ignore"):
            return xa / na - (x - xa) / (n - na)

    x, n = num.sum(), den.sum()
    observed = stat(num[in_a].sum(), den[in_a].sum(), x, n)
    if math.isnan(observed):
        return math.nan
    # only strata whose answers differ can change the statistic when permuted
    codes, strata_idx = np.unique(np.asarray(strata).astype(str), return_inverse=True)
    pair = num * 2 + den  # a stratum varies when its answers' (num, den) are not all the same
    first = np.full(len(codes), np.nan)
    first[strata_idx[::-1]] = pair[::-1]
    varying = np.bincount(strata_idx, weights=(pair != first[strata_idx]).astype(float), minlength=len(codes)) > 0
    if not varying.any():
        return 1.0
    fixed = ~varying[strata_idx]
    base_x, base_n = num[fixed & in_a].sum(), den[fixed & in_a].sum()
    keep = ~fixed
    v_num, v_den, v_a, v_s = num[keep], den[keep], in_a[keep], strata_idx[keep]
    order = np.argsort(v_s, kind="stable")
    v_num, v_den, v_a, v_s = v_num[order], v_den[order], v_a[order], v_s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(v_s)) + 1]
    sizes = np.diff(np.r_[starts, len(v_s)])
    m_a = np.add.reduceat(v_a.astype(int), starts)
    mask = np.concatenate([np.arange(size) < m for size, m in zip(sizes, m_a)])  # A's slots of each stratum
    rng = np.random.default_rng(rng_seed)
    extreme = 0
    rows = max(1, 2_000_000 // max(1, len(v_s)))
    for start in range(0, permutations, rows):
        b = min(rows, permutations - start)
        keys = rng.random((b, len(v_s))) + v_s[None, :]  # strata stay in their blocks; order inside is random
        perm = np.argsort(keys, axis=1)
        xa = base_x + (v_num[perm] * mask).sum(axis=1)
        na = base_n + (v_den[perm] * mask).sum(axis=1)
        t = stat(xa, na, x, n)
        extreme += int((np.abs(t) >= abs(observed) - 1e-12).sum())
    return (1 + extreme) / (1 + permutations)


def _seed_rates(num: np.ndarray, den: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    return np.array([num[seeds == k].sum() / d for k in seed_keys(seeds) if (d := den[seeds == k].sum()) > 0])


def _arm(num: np.ndarray, den: np.ndarray, seeds: np.ndarray) -> tuple[float, float, float, int]:
    """(mean rate, variance of that mean, its degrees of freedom, seeds): over seeds with two or more (the
    seeds' spread), else the one model's binomial variance (its own answers' noise; df infinite)."""
    rates = _seed_rates(num, den, seeds)
    if len(rates) >= 2:
        return float(rates.mean()), float(rates.var(ddof=1) / len(rates)), len(rates) - 1, len(rates)
    p, n = num.sum() / den.sum(), den.sum()
    return float(p), float(p * (1 - p) / n), math.inf, 1


def _seed_test(a: tuple, b: tuple, level: float) -> tuple[tuple[float, float], float]:
    """(CI of the difference of the arms' means, p) over seeds, when at least one arm has several ((nan, nan), nan
    otherwise or when nothing varies): a t interval whose variance adds the arms' (a single-model arm enters with
    its binomial variance, not as a fixed number) and whose degrees of freedom are the fewest seeds' (k - 1)."""
    (ma, va, da, ka), (mb, vb, db, kb) = a, b
    if max(ka, kb) < 2 or va + vb <= 0:
        return (math.nan, math.nan), math.nan
    df = min(d for d in (da, db) if d < math.inf)  # the fewest seeds' degrees of freedom: conservative
    se, d = math.sqrt(va + vb), ma - mb
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return (d - half, d + half), float(2 * stats.t.sf(abs(d) / se, df))


def rate_difference(a_num, a_den, a_strata, b_num, b_den, b_strata, a_seeds=None, b_seeds=None,
                    permutations: int = PERMUTATIONS, level: float = LEVEL, rng_seed: int = 0,
                    mde: bool = True) -> Difference:
    """Arm a's pooled rate minus arm b's (0/1 indicators per answer), paired by prompt (`*_strata`); `mde`:
    also the minimum detectable rise (else nan)."""
    a_num, a_den, b_num, b_den = (np.asarray(v, float) for v in (a_num, a_den, b_num, b_den))
    xa, na, xb, nb = a_num.sum(), a_den.sum(), b_num.sum(), b_den.sum()
    if na <= 0 or nb <= 0:
        return NAN
    p = permutation_p(np.r_[a_num, b_num], np.r_[a_den, b_den], np.r_[np.ones(len(a_num)), np.zeros(len(b_num))],
                      np.r_[np.asarray(a_strata).astype(str), np.asarray(b_strata).astype(str)], permutations,
                      rng_seed) if permutations > 0 else math.nan
    a_seeds = np.zeros(len(a_num), int) if a_seeds is None else np.asarray(a_seeds)
    b_seeds = np.zeros(len(b_num), int) if b_seeds is None else np.asarray(b_seeds)
    lo, hi = mover_of(ratio_ci(a_num, a_den, a_seeds, level=level), ratio_ci(b_num, b_den, b_seeds, level=level))
    seed_ci, seed_p = _seed_test(_arm(a_num, a_den, a_seeds), _arm(b_num, b_den, b_seeds), level)
    lo, hi = union((lo, hi), seed_ci, lower=-1.0, upper=1.0)
    if not math.isnan(seed_p):
        p = max(p, seed_p)
    detectable = rate_mde(int(na), int(nb), xb / nb) if mde else math.nan
    return Difference(xa / na - xb / nb, lo, hi, p, detectable, int(na), int(nb),
                      p_floor=1 / (1 + permutations) if permutations > 0 else math.nan)


def sign_flip_p(diffs: np.ndarray, permutations: int = PERMUTATIONS, rng_seed: int = 0) -> float:
    """Two-sided sign-flip p of the mean of paired differences (every flip when 2^k <= 65536)."""
    diffs = np.asarray(diffs, float)
    observed = abs(diffs.mean())
    if len(diffs) <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(diffs))))
        return float((np.abs(signs @ diffs / len(diffs)) >= observed - 1e-12).mean())
    rng = np.random.default_rng(rng_seed)
    signs = rng.choice((1.0, -1.0), size=(permutations, len(diffs)))
    return (1 + int((np.abs(signs @ diffs / len(diffs)) >= observed - 1e-12).sum())) / (1 + permutations)


def group_difference(a_num, a_den, a_groups, b_num, b_den, b_groups, permutations: int = PERMUTATIONS,
                     level: float = LEVEL, rng_seed: int = 0, mde: bool = True) -> Difference:
    """The mean over groups (in both arms) of each group's rate in a minus in b. From `SMALL` groups up it
    generalises over groups (sign flips of the groups' differences, a t interval over them); with fewer it is about
    these groups (a permutation test within groups, the fixed-groups interval): `units` says which."""
    a_num, a_den, b_num, b_den = (np.asarray(v, float) for v in (a_num, a_den, b_num, b_den))
    a_groups, b_groups = np.asarray(a_groups), np.asarray(b_groups)
    ka, xa, na = group_rates(a_num, a_den, a_groups)
    kb, xb, nb = group_rates(b_num, b_den, b_groups)
    both = [k for k in ka if k in set(kb)]
    if not both:
        return NAN
    ia, ib = [ka.index(k) for k in both], [kb.index(k) for k in both]
    xa, na, xb, nb = xa[ia], na[ia], xb[ib], nb[ib]
    diffs = xa / na - xb / nb
    g, value = len(both), float(diffs.mean())
    fixed = [mover(*args, level) for args in zip(xa, na, xb, nb)]
    below = math.sqrt(sum((d - lo) ** 2 for d, (lo, _) in zip(diffs, fixed))) / g
    above = math.sqrt(sum((hi - d) ** 2 for d, (_, hi) in zip(diffs, fixed))) / g
    pooled = rate_mde(int(na.sum()), int(nb.sum()), float(xb.sum() / nb.sum())) if mde else math.nan
    if g < SMALL:  # too few groups to generalise over: about these groups, tested within them
        keep_a, keep_b = np.isin(a_groups, both), np.isin(b_groups, both)
        p = permutation_p(np.r_[a_num[keep_a], b_num[keep_b]], np.r_[a_den[keep_a], b_den[keep_b]],
                          np.r_[np.ones(keep_a.sum()), np.zeros(keep_b.sum())],
                          np.r_[a_groups[keep_a], b_groups[keep_b]].astype(str), permutations,
                          rng_seed) if permutations > 0 else math.nan
        return Difference(value, max(-1.0, value - below), min(1.0, value + above), p, pooled, int(na.sum()),
                          int(nb.sum()), FIXED_GROUP_DIFF_UNITS, 1 / (1 + permutations) if permutations else math.nan)
    lo, hi = union((value - below, value + above), t_interval(diffs, level, group_df(g)), lower=-1.0, upper=1.0)
    p = sign_flip_p(diffs, permutations, rng_seed)
    detectable = group_mde(diffs) if mde else math.nan
    if mde and math.isnan(detectable):  # no spread: what the answers could show
        detectable = pooled
    return Difference(value, lo, hi, p, detectable, int(na.sum()), int(nb.sum()), GROUP_DIFF_UNITS,
                      sign_flip_floor(g))
