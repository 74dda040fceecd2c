"""Statistics against scipy and hand computation on fixed arrays."""

import math

import numpy as np
import pytest
from scipy import stats

from llm4rec.stats import (
    bootstrap_ci,
    cohens_d_paired,
    correct,
    mean_ci,
    paired_t_test,
    randomization_test,
    seed_aware_arrays,
    seed_mean_test,
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
    assert randomization_test(A, B, rounds=10_000) == pytest.approx(
        expected, rel=1e-12
    )  # 2^12 <= 10_000: exact


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
    assert seed_mean_test(a, b) == pytest.approx(
        stats.ttest_rel([2 / 3, 1 / 3], [1 / 3, 2 / 3]).pvalue
    )
