"""Hierarchical bootstrap for ratio metrics: resample seeds first, then answers within each seed.

Every metric here is a ratio of sums over answers: misaligned rate = sum(misaligned) / sum(coherent),
EM share = sum(misaligned) / n, mean alignment = sum(alignment) / sum(scored), and so on. With a single
seed only answers are resampled, and the result says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emwb.config import AnalysisConfig

DEFAULT_N_BOOT = AnalysisConfig().bootstrap_samples  # defined once, in emwb.config


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n_seeds: int

    @property
    def single_seed(self) -> bool:
        return self.n_seeds <= 1


BLOCK_CELLS = 4_000_000  # replicates x distinct values held at once: memory stays bounded whatever the answers


def resampled_sums(num: np.ndarray, den: np.ndarray, draws: int, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
    """`draws` bootstrap resamples of the answers (num, den), as the sums of num and of den per resample.

    A resample of n answers with replacement is a multinomial over the answers; answers with equal (num, den)
    are interchangeable, so it is drawn over the distinct pairs with their shares (the same distribution), in
    blocks of replicates: memory grows with the number of distinct pairs, not of answers.
    """
    pairs, counts = np.unique(np.stack([num, den], axis=1), axis=0, return_counts=True)
    shares = counts / counts.sum()
    sum_num, sum_den = np.empty(draws), np.empty(draws)
    block = max(1, BLOCK_CELLS // len(pairs))
    for start in range(0, draws, block):
        c = rng.multinomial(len(num), shares, size=min(block, draws - start))
        sum_num[start:start + len(c)] = c @ pairs[:, 0]
        sum_den[start:start + len(c)] = c @ pairs[:, 1]
    return sum_num, sum_den


def ratio_ci(num: np.ndarray, den: np.ndarray, seeds: np.ndarray, n_boot: int = DEFAULT_N_BOOT,
             level: float = 0.95,
             rng_seed: int = 0) -> Estimate:
    """Point estimate sum(num)/sum(den) with a percentile CI from a seeds-then-answers bootstrap."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    total_den = den.sum()
    value = num.sum() / total_den if total_den > 0 else math.nan
    keys = [k for k in dict.fromkeys(seeds.tolist())]
    k = len(keys)
    if len(num) == 0 or math.isnan(value) or n_boot <= 0:
        return Estimate(value, math.nan, math.nan, k)
    rng = np.random.default_rng(rng_seed)
    per_seed = [(num[seeds == s], den[seeds == s]) for s in keys]
    # For every bootstrap replicate and every seed slot: which seed, then a fresh resample of its answers.
    chosen = rng.integers(k, size=(n_boot, k)) if k > 1 else np.zeros((n_boot, 1), dtype=int)
    sum_num = np.zeros(n_boot)
    sum_den = np.zeros(n_boot)
    for i, (sn, sd) in enumerate(per_seed):
        draws = int((chosen == i).sum())
        if draws == 0:
            continue
        bn, bd = resampled_sums(sn, sd, draws, rng)
        rows, _ = np.nonzero(chosen == i)
        np.add.at(sum_num, rows, bn)
        np.add.at(sum_den, rows, bd)
    ok = sum_den > 0
    if not ok.any():
        return Estimate(value, math.nan, math.nan, k)
    stats = sum_num[ok] / sum_den[ok]
    alpha = (1 - level) / 2
    return Estimate(float(value), float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha)), k)


def mean_of_ratios_ci(num: np.ndarray, den: np.ndarray, strata: np.ndarray, n_boot: int = DEFAULT_N_BOOT,
                      level: float = 0.95, rng_seed: int = 0) -> Estimate:
    """Mean over strata (questions) of sum(num)/sum(den) within each, strata with den > 0 only; the CI
    resamples answers within each stratum."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    keys = [k for k in dict.fromkeys(strata.tolist()) if den[strata == k].sum() > 0]
    if not keys:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = float(np.mean([num[strata == k].sum() / den[strata == k].sum() for k in keys]))
    if n_boot <= 0:
        return Estimate(value, math.nan, math.nan, 0)
    rng = np.random.default_rng(rng_seed)
    total = np.zeros(n_boot)
    used = np.zeros(n_boot)
    for k in keys:
        sn, sd = num[strata == k], den[strata == k]
        bn, bd = resampled_sums(sn, sd, n_boot, rng)
        ok = bd > 0
        total[ok] += bn[ok] / bd[ok]
        used += ok
    stats = total[used > 0] / used[used > 0]
    alpha = (1 - level) / 2
    return Estimate(value, float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha)), 0)
