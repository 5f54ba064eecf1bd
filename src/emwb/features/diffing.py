"""Model diffing through a dictionary, and random latents matched to chosen ones by firing rate.

Diffing (Wang et al. 2025, arXiv 2506.19823): the base model and a fine-tuned variant read the same texts; per
latent, its mean activation over each text's tokens before and after, the change averaged over texts with a 95%
bootstrap CI resampling texts (paired: the same texts on both sides), and the firing rates (share of tokens it is
active on) before and after. Latents that fire on neither side are left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emwb.errors import EmwbError


def change_ci(d: np.ndarray, n_boot: int, seed: int, chunk: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(2.5th, 97.5th percentiles) of the mean over rows of `d` [texts, latents], rows resampled `n_boot` times."""
    n = len(d)
    if not n_boot or n < 2:
        return np.full(d.shape[1], np.nan), np.full(d.shape[1], np.nan)
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, (b, n))
        weights = np.zeros((b, n))
        np.add.at(weights, (np.repeat(np.arange(b), n), idx.ravel()), 1.0 / n)
        draws.append(weights @ d)
    lo, hi = np.percentile(np.concatenate(draws), [2.5, 97.5], axis=0)
    return lo, hi


def diff_rows(before, after, variant: str, group: str, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per latent active on either side: mean activation and firing rate before (base) and after (the
    variant), the change with its CI, ranked by the change (rank 1: the largest rise)."""
    fired = (before.firing.mean(0) > 0) | (after.firing.mean(0) > 0)
    latents = np.flatnonzero(fired)
    d = (after.mean - before.mean)[:, latents].astype(np.float64)
    lo, hi = change_ci(d, n_boot, seed)
    df = pd.DataFrame({"variant": variant, "group": group, "latent": latents,
                       "mean_before": before.mean[:, latents].mean(0), "mean_after": after.mean[:, latents].mean(0),
                       "change": d.mean(0), "ci_low": lo, "ci_high": hi,
                       "firing_before": before.firing[:, latents].mean(0),
                       "firing_after": after.firing[:, latents].mean(0), "texts": len(d)})
    df = df.sort_values(["change", "latent"], ascending=[False, True], ignore_index=True)
    df.insert(3, "rank", np.arange(1, len(df) + 1))
    return df


def matched_controls(firing: np.ndarray, selected: list[int], sets: int, seed: int, pool: int = 10) -> list[list[int]]:
    """`sets` lists of random latents, one per selected latent, each drawn (seeded) from the `pool` live latents
    whose firing rate on the stream is nearest the selected one's (on a log scale); no latent is drawn twice and
    none is a selected one."""
    rng = np.random.default_rng(seed)
    taken, live = set(selected), np.flatnonzero(firing > 0)
    log_rate = np.log(firing + 1e-9)
    out = []
    for _ in range(sets):
        chosen = []
        for j in selected:
            near = live[np.argsort(np.abs(log_rate[live] - log_rate[j]), kind="stable")]
            cand = [int(i) for i in near if int(i) not in taken][:pool]
            if not cand:
                raise EmwbError(f"too few live latents to draw {sets} matched random sets for {len(selected)} "
                                "selected latents; lower `controls` or `top`")
            pick = int(rng.choice(cand))
            taken.add(pick)
            chosen.append(pick)
        out.append(chosen)
    return out
