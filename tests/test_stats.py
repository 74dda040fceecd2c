"""Statistics against scipy, statsmodels, simulation and hand computation on fixed arrays."""

import math

import numpy as np
import pytest
from scipy import stats

from llm4rec.stats import (
    bootstrap_ci,
    choose_test,
    cohens_d_paired,
    correct,
    mcnemar_test,
    mean_ci,
    minimum_detectable_effect,
    paired_t_test,
    randomization_test,
    seed_aware_arrays,
    seed_level_test,
    wilcoxon_test,
)

A = np.array([0.61, 0.32, 0.85, 0.12, 0.55, 0.47, 0.91, 0.23, 0.38, 0.74, 0.66, 0.19])
B = np.array([0.52, 0.30, 0.70, 0.15, 0.41, 0.47, 0.80, 0.20, 0.35, 0.60, 0.58, 0.22])


def test_paired_t_matches_scipy_and_hand_computation():
    diff = A - B
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    hand = 2 * stats.t.sf(abs(t), len(diff) - 1)
    assert paired_t_test(A, B) == pytest.approx(stats.ttest_rel(A, B).pvalue, rel=1e-12)
    assert paired_t_test(A, B) == pytest.approx(hand, rel=1e-10)


def test_wilcoxon_matches_scipy():
    assert wilcoxon_test(A, B) == pytest.approx(stats.wilcoxon(A, B).pvalue, rel=1e-12)


def test_identical_systems_are_not_different():
    assert (
        paired_t_test(A, A) == 1.0
        and wilcoxon_test(A, A) == 1.0
        and randomization_test(A, A) == 1.0
    )


def test_exact_randomization_matches_scipy_permutation_test():
    expected = stats.permutation_test(
        (A, B),
        lambda x, y: np.mean(x - y),
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=np.inf,
    ).pvalue
    # 2^12 <= 10_000: exact
    assert randomization_test(A, B, rounds=10_000) == pytest.approx(expected, rel=1e-12)


def test_exact_randomization_by_hand_on_three_users():
    # diffs 1, 2, 3: sign patterns with |mean| >= 2 are (+,+,+) and (-,-,-): p = 2/8
    assert randomization_test([1, 2, 3], [0, 0, 0], rounds=8) == pytest.approx(0.25)


def test_monte_carlo_randomization_is_seeded_and_close_to_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.random(200), rng.random(200) * 0.95
    p1, p2 = (
        randomization_test(a, b, rounds=4000, seed=7),
        randomization_test(a, b, rounds=4000, seed=7),
    )
    assert p1 == p2
    reference = stats.permutation_test(
        (a, b),
        lambda x, y, axis=-1: np.mean(x - y, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=20_000,
        random_state=0,
    ).pvalue
    assert p1 == pytest.approx(reference, abs=0.02)


def test_corrections_against_hand_computed_values():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> max(0.06, 0.04)=0.06
    np.testing.assert_allclose(correct(p, "holm"), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(correct(p, "bonferroni"), [0.04, 0.16, 0.12, 0.02])
    # BH: p*m/rank = 0.02, 0.02, 0.04, 0.04, then running minimum from the largest rank
    np.testing.assert_allclose(correct(p, "bh"), [0.02, 0.04, 0.04, 0.02])
    np.testing.assert_allclose(correct([0.5, 0.9], "holm"), [1.0, 1.0])  # running max carries 1.0
    with pytest.raises(ValueError, match="unknown correction 'sidak'"):
        correct(p, "sidak")


def test_effect_sizes():
    assert cohens_d_paired([2, 3, 4], [1, 1, 1]) == pytest.approx(2.0)  # diffs 1,2,3: mean 2, sd 1
    low, high = bootstrap_ci(A, B, rounds=2000, seed=0)
    assert low < (A - B).mean() < high
    assert (low, high) == bootstrap_ci(A, B, rounds=2000, seed=0)
    narrow = bootstrap_ci(np.tile(A, 10), np.tile(B, 10), rounds=2000, seed=0)
    assert narrow[1] - narrow[0] < high - low


def test_mean_ci_by_hand():
    mean, std, low, high = mean_ci([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert (mean, std) == (2.0, 1.0)
    assert (low, high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert mean_ci([0.3]) == (0.3, 0.0, 0.3, 0.3)


def test_seed_handling():
    a = [np.array([1.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0])]
    b = [np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0])]
    ua, ub = seed_aware_arrays(a, b)
    np.testing.assert_allclose(ua, [0.5, 0.0, 1.0])
    np.testing.assert_allclose(ub, [0.0, 0.5, 1.0])
    # two seeds: no seed-level test at all (df = 1 would mark coincidences)
    assert np.isnan(seed_level_test(a, b))


def test_the_seed_level_test_is_welchs_over_three_or_more_seeds():
    """Seeds of two models share no randomness: Welch's t-test over their per-seed means, as
    scipy's ttest_ind(equal_var=False); equal per-seed differences no longer give p = 0."""
    rng = np.random.default_rng(7)
    a = [rng.random(50) + 0.05 * i for i in range(3)]
    b = [rng.random(50) for _ in range(4)]
    means_a, means_b = [x.mean() for x in a], [x.mean() for x in b]
    expected = stats.ttest_ind(means_a, means_b, equal_var=False).pvalue
    assert seed_level_test(a, b) == pytest.approx(expected, rel=1e-12)
    # Welch's statistic and degrees of freedom by hand
    va, vb = np.var(means_a, ddof=1) / 3, np.var(means_b, ddof=1) / 4
    t = (np.mean(means_a) - np.mean(means_b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    assert seed_level_test(a, b) == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-10)
    # equal per-seed differences gave the paired test over seeds p = 0 (its sd is 0); Welch does
    # not pair seeds, so the spread of each model's seeds still counts
    shifted = [x + 0.1 for x in b[:3]]
    assert stats.ttest_rel([x.mean() for x in shifted], means_b[:3]).pvalue < 1e-12
    assert seed_level_test(shifted, b[:3]) > 1e-3


def test_mcnemar_exact_by_hand_and_as_statsmodels():
    """Paired hits: a alone hits 7 users, b alone 2, both 5, neither 6. Exact McNemar:
    p = 2 P(Binomial(9, 1/2) <= 2) = 2 * (1 + 9 + 36) / 512."""
    from statsmodels.stats.contingency_tables import mcnemar

    a = np.array([1] * 7 + [0] * 2 + [1] * 5 + [0] * 6, dtype=float)
    b = np.array([0] * 7 + [1] * 2 + [1] * 5 + [0] * 6, dtype=float)
    assert mcnemar_test(a, b) == pytest.approx(2 * 46 / 512, rel=1e-12)
    table = [[5, 7], [2, 6]]  # [[both, a only], [b only, neither]]
    assert mcnemar_test(a, b) == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    assert mcnemar_test(a, a) == 1.0
    with pytest.raises(ValueError, match="binary"):
        mcnemar_test(a * 0.5, b)


def test_the_test_matches_the_metric():
    hits = (np.arange(200) % 3 == 0).astype(float)
    assert choose_test("hr_at_10", hits, np.roll(hits, 1)) == "mcnemar"
    averaged = hits * 0.5  # a hit rate averaged over two seeds is not binary
    assert choose_test("hr_at_10", averaged, hits) == "t"
    assert choose_test("ndcg_at_10", hits[:99] * 0.3, hits[:99]) == "randomization"
    assert choose_test("ndcg_at_10", hits * 0.3, hits) == "t"
    assert choose_test("ndcg_at_10", hits, hits, "wilcoxon") == "wilcoxon"


def test_the_minimum_detectable_effect_is_statsmodels_and_a_simulations():
    """The difference a paired t-test detects with 80% power: statsmodels' TTestPower effect size
    times the differences' sd, and 10,000 simulated experiments at that difference reject in 80%
    of them (within 5%)."""
    from statsmodels.stats.power import TTestPower

    sd, n, alpha = 0.3, 100, 0.05 / 42
    mde = minimum_detectable_effect(sd, n, alpha)
    effect = TTestPower().solve_power(nobs=n, alpha=alpha, power=0.8, alternative="two-sided")
    assert mde == pytest.approx(effect * sd, rel=1e-4)  # statsmodels' own solver tolerance
    rng = np.random.default_rng(0)
    diffs = rng.normal(mde, sd, size=(10_000, n))
    t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / math.sqrt(n))
    rejected = np.mean(2 * stats.t.sf(np.abs(t), n - 1) < alpha)
    assert rejected == pytest.approx(0.8, rel=0.05)
    assert np.isnan(minimum_detectable_effect(sd, 1, alpha))
    assert minimum_detectable_effect(0.0, n, alpha) == 0.0
