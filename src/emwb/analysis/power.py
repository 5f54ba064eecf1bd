"""Minimum detectable effects: the rise over a reference rate a comparison had 80% power to detect at 5%.

For a difference of two rates over answers the power is that of Fisher's exact test on the pooled counts
(exact: every outcome of two binomials summed against the test's rejection region), which the stratified
permutation test emwb reports is at least as powerful as when both arms answer the same prompts; above
`EXACT_UP_TO` answers an arm, the normal approximation on the arcsine scale (statsmodels) is used. For a mean
over groups tested by sign flips the power is the paired t test's (statsmodels), with no effect detectable when
the groups are too few for any sign-flip p to reach the level.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import stats
from statsmodels.stats.power import NormalIndPower, TTestPower

ALPHA = 0.05
POWER = 0.8
EXACT_UP_TO = 1000


@lru_cache(maxsize=64)
def _rejects(n_a: int, n_b: int, alpha: float) -> np.ndarray:
    """R[a, b] (1.0 or 0.0): whether Fisher's two-sided exact test rejects at `alpha` with a of n_a and b of n_b
    (every total t at once: the hypergeometric pmf of a given t, and each outcome's p the mass of the outcomes no
    more probable than it, ties within a relative 1e-7 included, as scipy's `fisher_exact` counts them)."""
    a = np.arange(n_a + 1)[None, :]
    t = np.arange(n_a + n_b + 1)[:, None]
    valid = (a <= t) & (t - a <= n_b)
    with np.errstate(invalid="ignore"):
        logpmf = np.where(valid, stats.hypergeom.logpmf(a, n_a + n_b, t, n_a), -np.inf)
    pmf = np.exp(logpmf)
    order = np.argsort(pmf, axis=1, kind="stable")
    ranked = np.take_along_axis(pmf, order, axis=1)
    tail = np.cumsum(ranked, axis=1)
    last = np.empty_like(order)
    for i in range(len(ranked)):  # per total: the last rank no more probable than each outcome (sorted search)
        last[i] = np.searchsorted(ranked[i], ranked[i] * (1 + 1e-7), side="right") - 1
    p = np.empty_like(pmf)
    np.put_along_axis(p, order, np.take_along_axis(tail, last, axis=1), axis=1)
    reject = valid & (p <= alpha + 1e-12)
    out = np.zeros((n_a + 1, n_b + 1))
    ts, As = np.nonzero(reject)
    out[As, ts - As] = 1.0
    return out


def fisher_power(n_a: int, n_b: int, p_a: float, p_b: float, alpha: float = ALPHA) -> float:
    """The probability that Fisher's exact test rejects when arm a's rate is p_a and arm b's p_b."""
    reject = _rejects(n_a, n_b, alpha)
    pa = stats.binom.pmf(np.arange(n_a + 1), n_a, p_a)
    pb = stats.binom.pmf(np.arange(n_b + 1), n_b, p_b)
    return float(pa @ reject @ pb)


def _arcsine_mde(n_a: int, n_b: int, p_b: float, alpha: float, power: float) -> float:
    h = NormalIndPower().solve_power(nobs1=n_a, ratio=n_b / n_a, alpha=alpha, power=power)
    top = math.asin(math.sqrt(p_b)) + h / 2
    return math.nan if top > math.pi / 2 else math.sin(top) ** 2 - p_b


def rate_mde(n_a: int, n_b: int, p_b: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest rise d (a fraction) such that arm a at p_b + d against arm b at p_b is detected with
    `power` at `alpha`; nan when no rise up to 1 - p_b is (or an arm has no answer)."""
    n_a, n_b = int(n_a), int(n_b)
    if n_a <= 0 or n_b <= 0 or math.isnan(p_b):
        return math.nan
    if min(n_a, n_b) > EXACT_UP_TO:
        return _arcsine_mde(n_a, n_b, p_b, alpha, power)
    if fisher_power(n_a, n_b, 1.0, p_b, alpha) < power:
        return math.nan
    lo, hi = 0.0, 1.0 - p_b
    for _ in range(40):
        mid = (lo + hi) / 2
        if fisher_power(n_a, n_b, p_b + mid, p_b, alpha) >= power:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-4:
            break
    return hi


def sign_flip_floor(groups: int) -> float:
    """The smallest two-sided p a sign-flip test over `groups` paired differences can give."""
    return min(1.0, 2.0 / 2 ** groups) if groups > 0 else 1.0


def group_mde(diffs: np.ndarray, alpha: float = ALPHA, power: float = POWER) -> float:
    """The mean difference over groups a sign-flip test had `power` to detect, from the groups' spread (paired t
    power); nan when too few groups for any p to reach `alpha` or no spread to scale by."""
    diffs = np.asarray(diffs, float)
    diffs = diffs[~np.isnan(diffs)]
    if len(diffs) < 2 or sign_flip_floor(len(diffs)) > alpha:
        return math.nan
    sd = diffs.std(ddof=1)
    if sd <= 0:
        return math.nan
    effect = TTestPower().solve_power(nobs=len(diffs), alpha=alpha, power=power)
    return float(effect * sd)
