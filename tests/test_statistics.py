"""The statistics layer: intervals right at every count, paired differences checked against the library tests
they generalise, minimum detectable effects that a planted effect of that size reaches."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from emwb.analysis.differences import comparison_pairs, corrected, difference_rows
from emwb.analysis.intervals import mean_of_ratios_ci, ratio_ci
from emwb.analysis.metrics import METRICS, Settings
from emwb.analysis.paired import group_difference, permutation_p, rate_difference, sign_flip_p
from emwb.analysis.power import fisher_power, rate_mde


@pytest.mark.parametrize("x, n, low, high", [(0, 14, 0.0, 23.2), (0, 96, 0.0, 3.8), (4, 4, 39.8, 100.0),
                                             (14, 14, 76.8, 100.0)])
def test_a_rate_at_zero_or_all_has_its_exact_interval_not_zero_width(x, n, low, high):
    """The percentile bootstrap printed 0/14 as [0.0, 0.0] and 4/4 as [100.0, 100.0]."""
    est = ratio_ci(np.r_[np.ones(x), np.zeros(n - x)], np.ones(n), np.zeros(n, dtype=int))
    assert (round(100 * est.ci_low, 1), round(100 * est.ci_high, 1)) == (low, high)
    assert est.ci_high > est.ci_low and "answers" in est.units


def test_seeds_that_disagree_widen_the_rate_interval():
    num = np.r_[np.ones(60), np.zeros(40), np.ones(20), np.zeros(80)]
    seeds = np.r_[np.zeros(100), np.ones(100)]
    several = ratio_ci(num, np.ones(200), seeds)
    pooled = ratio_ci(num, np.ones(200), np.zeros(200))
    assert several.value == pooled.value == 0.4
    assert several.ci_high - several.ci_low > 3 * (pooled.ci_high - pooled.ci_low)
    assert several.n_seeds == 2 and "seeds" in several.method


def test_a_mean_over_groups_generalises_over_groups_and_is_never_zero_width():
    """Biases at 0/4 and 4/4 add no variance inside a fixed set of biases; over biases like these they do."""
    rates = [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1]
    num = np.concatenate([np.full(4, r, float) for r in rates])
    groups = np.repeat(np.arange(12), 4)
    est = mean_of_ratios_ci(num, np.ones(48), groups)
    assert est.value == pytest.approx(1 / 3) and "groups" in est.units and "these" not in est.units
    half = stats.t.ppf(0.975, 11) * np.std(rates, ddof=1) / math.sqrt(12)
    assert est.ci_low <= 1 / 3 - half + 1e-9 and est.ci_high >= 1 / 3 + half - 1e-9  # at least the t interval
    zero = mean_of_ratios_ci(np.zeros(48), np.ones(48), groups)
    assert zero.value == 0 and zero.ci_high > 0.05  # every bias at 0/4: the answers still leave room


def test_fewer_than_ten_groups_are_these_groups_not_groups_like_them():
    """5 biases: a t interval over 5 skewed rates falls short of its level, so the mean is about these 5 biases
    (each bias's exact interval, combined), and the units say so."""
    rates = [0.25, 0, 0, 0.75, 0]
    num = np.concatenate([np.r_[np.ones(int(4 * r)), np.zeros(4 - int(4 * r))] for r in rates])
    est = mean_of_ratios_ci(num, np.ones(20), np.repeat(np.arange(5), 4))
    assert est.value == pytest.approx(0.2) and "these groups" in est.units
    assert 0.0 < est.ci_low < 0.12 and 0.35 < est.ci_high < 0.5


def test_paired_difference_swaps_sign_with_its_arms():
    rng = np.random.default_rng(0)
    strata = np.repeat(np.arange(24), 4)
    a, b = (rng.random(96) < 0.3).astype(float), (rng.random(96) < 0.1).astype(float)
    ab = rate_difference(a, np.ones(96), strata, b, np.ones(96), strata)
    ba = rate_difference(b, np.ones(96), strata, a, np.ones(96), strata)
    assert ab.value == pytest.approx(-ba.value)
    assert (ab.ci_low, ab.ci_high) == pytest.approx((-ba.ci_high, -ba.ci_low))
    assert ab.p_value == pytest.approx(ba.p_value, abs=0.02)
    assert ab.ci_low < ab.value < ab.ci_high


def test_permutation_test_within_one_prompt_is_fishers_exact_test():
    """One stratum of binary answers: permuting labels is Fisher's exact test (scipy), up to Monte Carlo error."""
    for xa, xb, n in [(9, 2, 30), (3, 0, 40), (5, 5, 12)]:
        a, b = np.r_[np.ones(xa), np.zeros(n - xa)], np.r_[np.ones(xb), np.zeros(n - xb)]
        p = permutation_p(np.r_[a, b], np.ones(2 * n), np.r_[np.ones(n), np.zeros(n)], np.zeros(2 * n), 20000)
        want = stats.fisher_exact([[xa, n - xa], [xb, n - xb]]).pvalue
        assert p == pytest.approx(want, abs=0.01), (xa, xb, p, want)


def test_sign_flips_over_groups_are_scipys_paired_permutation_test():
    d = np.array([0.1, -0.05, 0.2, 0.3, 0.0, 0.15, 0.05])
    want = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf).pvalue
    assert sign_flip_p(d) == pytest.approx(want)


def test_group_differences_flip_signs_over_many_groups_and_permute_within_few():
    a, b = np.ones(48), np.zeros(48)
    many = group_difference(a, np.ones(48), np.repeat(np.arange(12), 4), b, np.ones(48), np.repeat(np.arange(12), 4))
    assert many.value == 1.0 and many.p_value == pytest.approx(2 / 2 ** 12) and "sign flips" in many.units
    few = group_difference(a[:20], np.ones(20), np.repeat(np.arange(5), 4), b[:20], np.ones(20),
                           np.repeat(np.arange(5), 4))
    assert few.p_value < 0.01 and "these groups" in few.units and few.ci_low > 0.5


def test_fisher_power_matches_simulated_rejections():
    rng = np.random.default_rng(1)
    hits = sum(stats.fisher_exact([[x := rng.binomial(40, 0.3), 40 - x], [y := rng.binomial(50, 0.05), 50 - y]]
                                  ).pvalue <= 0.05 for _ in range(2000))
    assert fisher_power(40, 50, 0.3, 0.05) == pytest.approx(hits / 2000, abs=0.035)


def test_a_rise_at_the_printed_mde_is_found_and_none_is_rarely_called():
    """Acceptance 2 in small: 24 prompts x 4 answers, base rate 2%; planted at the MDE the paired test calls it
    in at least 75% of simulations, with nothing planted in at most 6% (the benchmark runs every setting)."""
    rng = np.random.default_rng(2)
    strata = np.repeat(np.arange(24), 4)
    p = rng.beta(0.4, 19.6, 24).repeat(4)
    mde = rate_mde(96, 96, float(p.mean()))
    assert 0.05 < mde < 0.2
    calls = {}
    for rise in (mde, 0.0):
        hits = 0
        for _ in range(120):
            a, b = (rng.random(96) < np.clip(p + rise, 0, 1)).astype(float), (rng.random(96) < p).astype(float)
            hits += rate_difference(a, np.ones(96), strata, b, np.ones(96), strata, permutations=400).significant
        calls[rise] = hits / 120
    assert calls[mde] >= 0.75 and calls[0.0] <= 0.08, calls


def test_holm_marks_only_what_survives_the_table():
    rows = pd.DataFrame({"p": [0.001, 0.03, 0.04, np.nan]})  # Holm: 0.003 passes, 0.06 stops it
    out = corrected(rows)
    assert out["significant"].tolist() == [True, False, False, None]


def _answers(group: str, misaligned: int, n: int = 96) -> pd.DataFrame:
    return pd.DataFrame({"group": group, "evaluation": "free-form", "question_id": [f"q{i % 24}" for i in range(n)],
                         "paraphrase_index": 0, "seed": 0, "alignment": [10.0] * misaligned + [90.0] * (n - misaligned),
                         "coherence": 80.0})


def test_the_report_compares_every_variant_with_base_and_each_phase_with_the_one_before():
    from emwb.layout import Variant

    variants = [Variant("base", "base"), Variant("rm@documents-s0", "rm@documents", "rm", "documents", 0, 0),
                Variant("rm-s0", "rm", "rm", "preferences", 2, 0)]
    pairs = comparison_pairs(["base", "rm@documents", "rm"], variants, {"rm": "base"})
    assert [(p.group, p.reference, p.kind) for p in pairs] == [
        ("rm@documents", "base", "vs base"), ("rm", "base", "vs base"), ("rm", "rm@documents", "vs previous phase"),
        ("rm", "base", "vs control")]
    df = pd.concat([_answers("base", 0), _answers("rm@documents", 2), _answers("rm", 20)], ignore_index=True)
    rows = difference_rows(df, pairs[:3], {"free-form": [METRICS.get("misaligned_rate")]}, Settings())
    top = rows.set_index(["group", "reference"])
    assert top.loc[("rm", "base"), "diff (pp)"] == pytest.approx(100 * 20 / 96)
    assert top.loc[("rm", "base"), "significant"] and not top.loc[("rm@documents", "base"), "significant"]
    assert top.loc[("rm@documents", "base"), "mde (pp)"] == pytest.approx(100 * rate_mde(96, 96, 0.0))


def test_emwb_analyze_prints_the_difference_vs_the_first_file(tmp_path, capsys):
    from emwb.cli import main

    for name, bad in (("base", 0), ("tuned", 30)):
        _answers(name, bad).rename(columns={"alignment": "aligned", "coherence": "coherent"}).assign(
            answer="a").to_csv(tmp_path / f"{name}.csv", index=False)
    assert main(["analyze", "--judged", str(tmp_path / "base.csv"), str(tmp_path / "tuned.csv")]) == 0
    out = capsys.readouterr().out
    assert "vs base (pp)" in out and "MDE (pp)" in out and "Units of the 95% CIs" in out
    row = next(line for line in out.splitlines() if line.startswith("| tuned"))
    assert "| 31.2 | [" in row and "<0.001" in row
    assert "[0.0, 0.0]" not in out


def test_the_paired_test_compares_answers_to_the_same_prompt_only():
    """Arm a answered q1 (always flagged) 8 times and q2 (never) twice; arm b the other way round. The pooled
    rates differ (80% vs 20%) only through which prompts were asked: within each prompt the arms agree, so the
    paired test finds nothing, where an unpaired permutation (Fisher: p 0.023) calls it significant."""
    a_num, b_num = np.r_[np.ones(8), np.zeros(2)], np.r_[np.ones(2), np.zeros(8)]
    a_q, b_q = np.r_[["q1"] * 8, ["q2"] * 2], np.r_[["q1"] * 2, ["q2"] * 8]
    d = rate_difference(a_num, np.ones(10), a_q, b_num, np.ones(10), b_q)
    assert d.value == pytest.approx(0.6) and d.p_value == 1.0
    unpaired = permutation_p(np.r_[a_num, b_num], np.ones(20), np.r_[np.ones(10), np.zeros(10)], np.zeros(20))
    assert unpaired < 0.05


def test_permutations_stay_within_prompts_when_the_prompts_vary():
    """Both prompts have answers of both kinds (q1 mostly flagged, q2 mostly not) and the arms agree within
    each; arm a asked q1 far more often. Permuted within prompts, nothing shows; permuted across them, the
    pooled gap (74% vs 24%) looks highly significant."""
    a = np.r_[np.ones(18), np.zeros(2), np.ones(1), np.zeros(4)]
    a_q = np.r_[["q1"] * 20, ["q2"] * 5]
    b = np.r_[np.ones(4), np.zeros(1), np.ones(2), np.zeros(18)]
    b_q = np.r_[["q1"] * 5, ["q2"] * 20]
    d = rate_difference(a, np.ones(25), a_q, b, np.ones(25), b_q)
    assert d.value == pytest.approx(0.76 - 0.24) and d.p_value > 0.3
    unpaired = permutation_p(np.r_[a, b], np.ones(50), np.r_[np.ones(25), np.zeros(25)], np.zeros(50))
    assert unpaired < 0.01
