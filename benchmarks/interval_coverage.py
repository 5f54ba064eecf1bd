"""Coverage of emwb's intervals on simulated clustered answers, beside the percentile bootstrap they replaced.

Each setting simulates judged answers: G prompt groups (questions or biases), m answers per group per seed, 1-3
fine-tuning seeds (a seed shifts every group's log-odds by N(0, 0.5^2)), and 85% of answers coherent (the rates'
denominators are random too). The true rates range from 0 to 0.5, including rare events concentrated on a few
groups. Every simulated file goes through emwb's own analysis functions (the ones the report calls), and each
interval is checked against the truth of the estimand it declares:

- rate: the pooled rate over the fixed prompts (one seed: this model's; several: the mean over seeds);
- group mean: the mean over groups like these from 10 groups up, these groups' mean below (the groups' rates drawn
  afresh per simulation);
- paired difference: a variant (1 or 3 seeds) against a reference answering the same prompts (fixed prompts);
- group difference: the mean over groups of each group's difference (as for group means).

It prints coverage and median width per setting, the old percentile bootstrap's beside the rates and group
means, then the planted-effect check (a difference planted at the minimum detectable effect emwb prints is called
significant; none planted, rarely), and last the minimum coverage of the shipped intervals.

    .venv/bin/python benchmarks/interval_coverage.py             # every setting, 1000 simulations each
    .venv/bin/python benchmarks/interval_coverage.py --small     # a few settings: checks that it runs
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
from scipy import special

from emwb.analysis.intervals import SMALL, mean_of_ratios_ci, ratio_ci
from emwb.analysis.paired import group_difference, rate_difference

SEED_SD = 0.5
COHERENT = 0.85
PROFILES = {  # name -> (rate per group, given G and a generator); fixed for a setting
    "zero": lambda g, rng: np.zeros(g),
    "rare, 2 groups": lambda g, rng: np.where(np.arange(g) < 2, 0.0033 * g / 2, 0.0),
    "low 2%": lambda g, rng: rng.beta(0.4, 19.6, g),
    "10%": lambda g, rng: rng.beta(1.0, 9.0, g),
    "30%": lambda g, rng: rng.beta(1.5, 3.5, g),
    "50%": lambda g, rng: rng.beta(2.5, 2.5, g),
}
POPULATIONS = {  # name -> (a, b) of the Beta the groups' rates are drawn from; the mean is the truth
    "2%": (0.4, 19.6), "10%": (1.0, 9.0), "30%": (1.5, 3.5), "50%": (2.5, 2.5),
}
GH_X, GH_W = np.polynomial.hermite_e.hermegauss(40)  # E over a standard normal seed effect


def shifted(p: np.ndarray, z) -> np.ndarray:
    """Rates p with their log-odds shifted by z (0 stays 0, 1 stays 1)."""
    with np.errstate(divide="ignore"):
        out = special.expit(special.logit(np.clip(p, 0, 1)) + z)
    return np.where(p <= 0, 0.0, np.where(p >= 1, 1.0, out))


def seed_mean(p: np.ndarray) -> np.ndarray:
    """E over seeds of each group's rate."""
    return sum(w * shifted(p, SEED_SD * x) for x, w in zip(GH_X, GH_W)) / GH_W.sum()


def answers(p: np.ndarray, m: int, seeds: int, rng: np.random.Generator, seed_sd: float = SEED_SD):
    """(num, den, group, seed) arrays of one simulated file, each seed's shifted rates, and the seeds' shifts."""
    z = rng.normal(0, seed_sd, seeds)
    g = len(p)
    rates = np.stack([shifted(p, zi) for zi in z])                       # seeds x groups
    den = (rng.random((seeds, g, m)) < COHERENT).astype(float)
    num = den * (rng.random((seeds, g, m)) < rates[:, :, None])
    group = np.broadcast_to(np.arange(g)[None, :, None], (seeds, g, m))
    seed = np.broadcast_to(np.arange(seeds)[:, None, None], (seeds, g, m))
    return num.ravel(), den.ravel(), group.ravel(), seed.ravel(), rates, z


# The replaced intervals, as emwb computed them up to 8bfea60 (analysis/bootstrap.py): a percentile bootstrap
# over seeds, then answers (rates), or over answers within strata (means over groups).
OLD_N_BOOT = 500  # the report used 2,000 (1,000 per question); the coverage hardly depends on it
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


def ratio_ci_old(num: np.ndarray, den: np.ndarray, seeds: np.ndarray, n_boot: int = OLD_N_BOOT,
             level: float = 0.95,
             rng_seed: int = 0) -> tuple[float, float]:
    """Point estimate sum(num)/sum(den) with a percentile CI from a seeds-then-answers bootstrap."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    total_den = den.sum()
    value = num.sum() / total_den if total_den > 0 else math.nan
    keys = [k for k in dict.fromkeys(seeds.tolist())]
    k = len(keys)
    if len(num) == 0 or math.isnan(value) or n_boot <= 0:
        return (math.nan, math.nan)
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
        return (math.nan, math.nan)
    stats = sum_num[ok] / sum_den[ok]
    alpha = (1 - level) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def mean_of_ratios_ci_old(num: np.ndarray, den: np.ndarray, strata: np.ndarray, n_boot: int = OLD_N_BOOT,
                      level: float = 0.95, rng_seed: int = 0) -> tuple[float, float]:
    """Mean over strata (questions) of sum(num)/sum(den) within each, strata with den > 0 only; the CI
    resamples answers within each stratum."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    keys = [k for k in dict.fromkeys(strata.tolist()) if den[strata == k].sum() > 0]
    if not keys:
        return (math.nan, math.nan)
    value = float(np.mean([num[strata == k].sum() / den[strata == k].sum() for k in keys]))
    if n_boot <= 0:
        return (math.nan, math.nan)
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
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


class Tally:
    def __init__(self):
        self.hits, self.widths = [], []

    def add(self, lo: float, hi: float, truth: float) -> None:
        self.hits.append(lo - 1e-12 <= truth <= hi + 1e-12)
        self.widths.append(hi - lo)

    def text(self) -> str:
        return f"{100 * np.mean(self.hits):5.1f}% {100 * np.median(self.widths):5.1f}"

    @property
    def coverage(self) -> float:
        return float(np.mean(self.hits))


def rates(settings, sims: int, old: int, rng) -> float:
    print("\nRates over fixed prompts (coverage %, median width in points; truth: this model's rate with one seed, "
          "the mean over seeds with several)")
    print(f"{'profile':>15} {'G':>3} {'m':>4} {'seeds':>5} | {'emwb':>11} | {'old bootstrap':>13}")
    worst = 1.0
    for profile, g, m, k in settings:
        p = PROFILES[profile](g, np.random.default_rng(g * 1000 + m))
        new, base = Tally(), Tally()
        for i in range(sims):
            num, den, _, seed, r, _ = answers(p, m, k, rng)
            truth = (seed_mean(p).mean() if k > 1 else r[0].mean())
            e = ratio_ci(num, den, seed)
            if math.isnan(e.value):
                continue
            new.add(e.ci_low, e.ci_high, truth)
            if i < old:
                base.add(*ratio_ci_old(num, den, seed), truth)
        worst = min(worst, new.coverage)
        print(f"{profile:>15} {g:>3} {m:>4} {k:>5} | {new.text():>11} | {base.text() if old else '':>13}")
    return worst


def group_means(settings, sims: int, old: int, rng) -> float:
    print("\nMeans over groups (groups drawn afresh per simulation; truth: the population mean from 10 groups up, "
          "these groups' mean below)")
    print(f"{'population':>15} {'G':>3} {'m':>4} {'seeds':>5} | {'emwb':>11} | {'old bootstrap':>13}")
    worst = 1.0
    for pop, g, m, k in settings:
        a, b = POPULATIONS[pop]
        xs = rng.beta(a, b, 20000)
        over_seeds = float(seed_mean(xs).mean())
        new, base = Tally(), Tally()
        for i in range(sims):
            p = rng.beta(a, b, g)
            num, den, group, seed, r, z = answers(p, m, k, rng)
            if g < SMALL:  # fewer groups: the estimand is these groups' mean (this model's, or over seeds)
                truth = float(seed_mean(p).mean()) if k > 1 else float(r[0].mean())
            else:
                truth = over_seeds if k > 1 else float(shifted(xs, z[0]).mean())  # one seed: this model's
            e = mean_of_ratios_ci(num, den, group, seeds=seed)
            if math.isnan(e.value):
                continue
            new.add(e.ci_low, e.ci_high, truth)
            if i < old:
                base.add(*mean_of_ratios_ci_old(num, den, group), truth)
        worst = min(worst, new.coverage)
        print(f"{pop:>15} {g:>3} {m:>4} {k:>5} | {new.text():>11} | {base.text() if old else '':>13}")
    return worst


def differences(settings, sims: int, rng) -> float:
    print("\nPaired differences over the same fixed prompts (variant minus reference; the variant with 1 or 3 seeds, "
          "the reference one model; truth: the mean over seeds with several)")
    print(f"{'reference':>15} {'G':>3} {'m':>4} {'rise':>5} {'seeds':>5} | {'emwb':>11}")
    worst = 1.0
    for profile, g, m, rise, k in settings:
        p = PROFILES[profile](g, np.random.default_rng(g * 1000 + m))
        lifted = np.clip(p + rise, 0, 1)
        over_seeds = float(seed_mean(lifted).mean())
        tally = Tally()
        for _ in range(sims):
            na, da, ga, sa, ra, _ = answers(lifted, m, k, rng)
            nb, db, gb, _, rb, _ = answers(p, m, 1, rng)
            d = rate_difference(na, da, ga, nb, db, gb, a_seeds=sa, permutations=0, mde=False)
            if not math.isnan(d.value):
                tally.add(d.ci_low, d.ci_high, (over_seeds if k > 1 else ra[0].mean()) - rb[0].mean())
        worst = min(worst, tally.coverage)
        print(f"{profile:>15} {g:>3} {m:>4} {rise:>5} {k:>5} | {tally.text():>11}")
    return worst


def group_differences(settings, sims: int, rng) -> float:
    print("\nDifferences of means over groups (groups drawn afresh; truth: the population's mean rise from 10 groups "
          "up, these groups' below)")
    print(f"{'population':>15} {'G':>3} {'m':>4} {'rise':>5} | {'emwb':>11}")
    worst = 1.0
    for pop, g, m, rise in settings:
        a, b = POPULATIONS[pop]
        draws = rng.beta(a, b, 20000)
        tally = Tally()
        for _ in range(sims):
            p = rng.beta(a, b, g)
            na, da, ga, _, ra, za = answers(np.clip(p + rise, 0, 1), m, 1, rng)
            nb, db, gb, _, rb, zb = answers(p, m, 1, rng)
            if g < SMALL:  # fewer groups: these groups' difference
                truth = float(ra[0].mean() - rb[0].mean())
            else:
                truth = float(shifted(np.clip(draws + rise, 0, 1), za[0]).mean() - shifted(draws, zb[0]).mean())
            d = group_difference(na, da, ga, nb, db, gb, permutations=200, mde=False)
            if not math.isnan(d.value):
                tally.add(d.ci_low, d.ci_high, truth)
        worst = min(worst, tally.coverage)
        print(f"{pop:>15} {g:>3} {m:>4} {rise:>5} | {tally.text():>11}")
    return worst


def planted(settings, sims: int, permutations: int, rng) -> tuple[float, float]:
    """(lowest share called significant at the printed MDE, highest share with nothing planted)."""
    print("\nPlanted effects: the rise emwb prints as detectable (MDE) planted on every prompt, and none")
    print(f"{'reference':>15} {'G':>3} {'m':>4} | {'MDE pts':>7} {'significant at MDE':>18} {'with none':>9}")
    low, high = 1.0, 0.0
    for profile, g, m in settings:
        p = PROFILES[profile](g, np.random.default_rng(g * 1000 + m))
        nb, db, gb, _, _, _ = answers(p, m, 1, np.random.default_rng(7), seed_sd=0)
        mde = rate_difference(nb, db, gb, nb, db, gb, permutations=0).mde  # what emwb prints for this design
        calls = {}
        for name, rise in (("mde", mde), ("none", 0.0)):
            hits = 0
            for _ in range(sims):
                na, da, ga, _, _, _ = answers(np.clip(p + rise, 0, 1), m, 1, rng, seed_sd=0)  # one model, edited
                nb, db, gb, _, _, _ = answers(p, m, 1, rng, seed_sd=0)
                hits += rate_difference(na, da, ga, nb, db, gb, permutations=permutations, mde=False).significant
            calls[name] = hits / sims
        low, high = min(low, calls["mde"]), max(high, calls["none"])
        print(f"{profile:>15} {g:>3} {m:>4} | {100 * mde:7.1f} {100 * calls['mde']:17.1f}% {100 * calls['none']:8.1f}%")
    return low, high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=1000)
    ap.add_argument("--planted-sims", type=int, default=400)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--old-sims", type=int, default=200, help="simulations of each setting that the old bootstrap "
                    "also runs on (it is ~30x slower; 0: none)")
    ap.add_argument("--small", action="store_true", help="a few settings, 30 simulations: checks that it runs")
    a = ap.parse_args()
    rng = np.random.default_rng(2026)
    t0 = time.time()
    if a.small:
        a.sims, a.planted_sims, a.permutations, a.old_sims = 30, 30, 200, 30
        rate_settings = [("rare, 2 groups", 24, 4, 1), ("30%", 5, 20, 3)]
        group_settings = [("10%", 5, 4, 1)]
        diff_settings = [("zero", 24, 4, 0.05, 1), ("10%", 24, 4, 0.05, 3)]
        gdiff_settings = [("10%", 24, 4, 0.05)]
        planted_settings = [("low 2%", 24, 4)]
    else:
        rate_settings = [(p, g, m, k) for p, g, m, k in itertools.product(PROFILES, (5, 24, 52), (1, 4, 20, 100),
                                                                              (1, 3))]
        rate_settings += [(p, 24, 4, 2) for p in PROFILES]
        group_settings = list(itertools.product(POPULATIONS, (5, 24, 52), (1, 4, 20, 100), (1, 3)))
        diff_settings = [(p, g, m, r, 1) for p, g, m, r in itertools.product(PROFILES, (5, 24, 52), (1, 4, 20),
                                                                            (0.0, 0.05, 0.2))]
        diff_settings += [(p, g, m, r, 3) for p, g, m, r in itertools.product(PROFILES, (24,), (4, 20), (0.0, 0.05))]
        gdiff_settings = list(itertools.product(POPULATIONS, (5, 24, 52), (1, 4, 20), (0.0, 0.05, 0.2)))
        planted_settings = list(itertools.product(("zero", "rare, 2 groups", "low 2%", "10%", "30%"), (8, 24, 52),
                                                  (1, 4, 12)))
    worst = [rates(rate_settings, a.sims, a.old_sims, rng), group_means(group_settings, a.sims, a.old_sims, rng),
             differences(diff_settings, a.sims, rng), group_differences(gdiff_settings, a.sims, rng)]
    low, high = planted(planted_settings, a.planted_sims, a.permutations, rng)
    print(f"\n{a.sims} simulations per coverage setting, {a.planted_sims} per planted setting; {time.time() - t0:.0f} s")
    print(f"planted at the MDE: called significant in at least {100 * low:.1f}% of simulations; "
          f"with nothing planted, in at most {100 * high:.1f}%")
    print(f"minimum coverage of the shipped intervals: {100 * min(worst):.1f}%")


if __name__ == "__main__":
    main()
