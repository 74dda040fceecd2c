"""Significance tests, multiple-comparison corrections and effect sizes over per-user metrics.

Pure functions over arrays (ranx-style): no runs, files or models in sight.

- Paired tests between two systems on the same users: paired t-test, Wilcoxon signed-rank, a
  two-sided paired randomization (sign-flip) test, and McNemar's exact test for a binary outcome
  (a hit rate on one seed). ``choose_test`` picks the one that matches the metric (``auto``).
- Power: ``minimum_detectable_effect``, the smallest mean difference a paired test of n users
  detects with 80% power at a given alpha (the noncentral t, as statsmodels' TTestPower solves it).
- Seeds: ``seed_aware_arrays`` averages each user's metric over seeds before the paired
  test (the unit of analysis is the user; seed noise is averaged out, not counted as extra
  samples). ``seed_level_test`` is the test that counts training variance: Welch's t-test over
  the per-seed means, the seeds of two models independent (they share no randomness); with fewer
  than ``MIN_SEEDS`` seeds it is not computed.
- Corrections over a family of comparisons: Holm-Bonferroni (default), Bonferroni,
  Benjamini-Hochberg.
- Effect sizes: mean difference with a percentile bootstrap 95% CI, and Cohen's d for
  paired samples (mean difference / standard deviation of the differences, d_z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

TESTS = ("auto", "t", "wilcoxon", "randomization", "mcnemar")
MIN_SEEDS = 3  # a seed-level test needs at least this many seeds per model (Welch: df >= 2)
# `auto`: below this many users a continuous metric is tested by the randomization test, whose
# p-value needs no normal approximation (the t-test's CLT is weak on skewed, zero-heavy per-user
# NDCG at small n); from it on, the paired t-test
T_TEST_MIN_USERS = 100
TEST_NAMES = {
    "t": "paired t-test",
    "wilcoxon": "Wilcoxon signed-rank test",
    "randomization": "paired randomization test",
    "mcnemar": "exact McNemar test",
}
CORRECTIONS = ("holm", "bonferroni", "bh", "none")


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {a.shape} and {b.shape}")
    return a, b


def paired_t_test(a, b) -> float:
    """Two-sided p-value of the paired t-test (1.0 when all differences are zero)."""
    a, b = _paired(a, b)
    if np.allclose(a - b, 0):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)


def wilcoxon_test(a, b) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test (zero differences dropped, as scipy)."""
    a, b = _paired(a, b)
    if np.allclose(a - b, 0):
        return 1.0
    return float(stats.wilcoxon(a, b).pvalue)


def randomization_test(a, b, rounds: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomization test on the mean difference (random sign flips).

    Exact (all 2^n sign patterns) when 2^n <= rounds; otherwise Monte Carlo with the
    (count + 1) / (rounds + 1) estimate, which never returns 0.
    """
    a, b = _paired(a, b)
    diff = a - b
    n = len(diff)
    observed = abs(diff.mean())
    tolerance = 1e-12 * max(1.0, observed)
    if n < 63 and 2**n <= rounds:
        signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        means = np.abs(signs @ diff) / n
        return float(np.mean(means >= observed - tolerance))
    rng = np.random.default_rng(seed)
    count = 0
    for start in range(0, rounds, 1000):
        size = min(1000, rounds - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        count += int(np.sum(np.abs(signs @ diff) / n >= observed - tolerance))
    return (count + 1) / (rounds + 1)


def mcnemar_test(a, b) -> float:
    """Two-sided exact McNemar test of two paired binary outcomes (a hit or not per user): under
    the null the discordant users split evenly, so with n01 users hit by b alone and n10 by a
    alone, p = min(1, 2 P(Binomial(n01 + n10, 1/2) <= min(n01, n10))); 1.0 with no discordant
    user."""
    a, b = _paired(a, b)
    if not (is_binary(a) and is_binary(b)):
        raise ValueError("McNemar's test needs binary outcomes (0/1 per user)")
    n10, n01 = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    if n10 + n01 == 0:
        return 1.0
    return float(min(1.0, 2 * stats.binom.cdf(min(n10, n01), n10 + n01, 0.5)))


def is_binary(x) -> bool:
    x = np.asarray(x)
    return bool(np.all((x == 0) | (x == 1)))


def choose_test(metric: str, a, b, test: str = "auto") -> str:
    """The test a comparison uses: the configured one, or under `auto` the one that matches the
    metric: a hit rate whose paired values are binary (one seed) by McNemar's exact test; any other
    metric (NDCG, MRR, recall, a hit rate averaged over seeds) by the paired t-test from
    T_TEST_MIN_USERS users on, by the randomization test below."""
    if test != "auto":
        return test
    if metric.startswith("hr_at_") and is_binary(a) and is_binary(b):
        return "mcnemar"
    return "t" if len(np.asarray(a)) >= T_TEST_MIN_USERS else "randomization"


def paired_test(a, b, test: str = "t", rounds: int = 10_000, seed: int = 0) -> float:
    if test == "t":
        return paired_t_test(a, b)
    if test == "wilcoxon":
        return wilcoxon_test(a, b)
    if test == "randomization":
        return randomization_test(a, b, rounds, seed)
    if test == "mcnemar":
        return mcnemar_test(a, b)
    raise ValueError(f"unknown test '{test}' (known: {', '.join(TESTS)})")


def minimum_detectable_effect(sd: float, n: int, alpha: float, power: float = 0.8) -> float:
    """The smallest mean paired difference a two-sided paired t-test over n users detects with
    probability `power` at level `alpha`, given the standard deviation of the differences: d * sd,
    d solving P(|T'| > t_{1-alpha/2, n-1}) = power for T' noncentral t with n - 1 degrees of
    freedom and noncentrality d sqrt(n) (statsmodels' TTestPower.solve_power). NaN for n < 2;
    0 when sd is 0 (any difference is detected)."""
    if n < 2:
        return float("nan")
    if sd == 0:
        return 0.0
    df, critical = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)

    def achieved(d: float) -> float:
        nc = d * np.sqrt(n)
        return stats.nct.sf(critical, df, nc) + stats.nct.cdf(-critical, df, nc) - power

    high = 1.0
    while achieved(high) < 0:
        high *= 2
    from scipy.optimize import brentq

    return float(brentq(achieved, 0.0, high, xtol=1e-12) * sd)


def correct(pvalues, method: str = "holm") -> np.ndarray:
    """Adjusted p-values for a family of comparisons (monotone, capped at 1)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    if m == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty(m)
    if method == "holm":
        running = 0.0
        for rank, idx in enumerate(order):
            running = max(running, (m - rank) * p[idx])
            adjusted[idx] = min(running, 1.0)
        return adjusted
    if method == "bh":
        running = 1.0
        for rank in range(m - 1, -1, -1):
            idx = order[rank]
            running = min(running, p[idx] * m / (rank + 1))
            adjusted[idx] = running
        return adjusted
    raise ValueError(f"unknown correction '{method}' (known: {', '.join(CORRECTIONS)})")


def cohens_d_paired(a, b) -> float:
    """Cohen's d_z for paired samples: mean(a - b) / sd(a - b) (0 when sd is 0)."""
    a, b = _paired(a, b)
    diff = a - b
    sd = diff.std(ddof=1) if len(diff) > 1 else 0.0
    return float(diff.mean() / sd) if sd > 0 else 0.0


def bootstrap_mean_ci(
    values, rounds: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of one sample (users resampled with replacement)."""
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(rounds)
    for start in range(0, rounds, 500):
        size = min(500, rounds - start)
        idx = rng.integers(0, len(x), size=(size, len(x)))
        means[start : start + size] = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    a, b, rounds: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(a - b), resampling users with replacement."""
    a, b = _paired(a, b)
    return bootstrap_mean_ci(a - b, rounds, seed, level)


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sample std, CI low, CI high), a t-distribution CI; std 0 and CI = mean for n = 1."""
    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, 0.0, mean, mean
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * std / np.sqrt(len(x)))
    return mean, std, mean - half, mean + half


def seed_aware_arrays(
    per_seed_a: list[np.ndarray], per_seed_b: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Average each user's metric over seeds (same users, same order in every array)."""
    return np.mean(np.vstack(per_seed_a), axis=0), np.mean(np.vstack(per_seed_b), axis=0)


def seed_level_test(per_seed_a: list[np.ndarray], per_seed_b: list[np.ndarray]) -> float:
    """Welch's t-test over the two models' per-seed means (seed i of one model shares no
    randomness with seed i of the other, so the seeds are two independent samples, not pairs);
    NaN with fewer than MIN_SEEDS seeds on either side (two seeds give df = 1 at best: a test
    that marks coincidences), 1.0 when every mean is the same."""
    means_a = np.array([float(np.mean(x)) for x in per_seed_a])
    means_b = np.array([float(np.mean(x)) for x in per_seed_b])
    if min(len(means_a), len(means_b)) < MIN_SEEDS:
        return float("nan")
    if np.allclose(np.concatenate([means_a, means_b]), means_a[0]):
        return 1.0
    if means_a.std() == 0 and means_b.std() == 0:
        return 0.0  # two constant, different samples
    return float(stats.ttest_ind(means_a, means_b, equal_var=False).pvalue)


@dataclass(frozen=True)
class Comparison:
    """One system against a reference on one dataset and metric."""

    dataset: str
    metric: str
    system: str
    reference: str
    mean_system: float
    mean_reference: float
    diff: float
    ci_low: float
    ci_high: float
    cohens_d: float
    p_value: float
    test: str = "t"  # the test behind p_value (choose_test)
    sd_diff: float = float("nan")  # standard deviation of the paired differences (power)
    p_adjusted: float = float("nan")
    significant: bool = False


def compare_pair(
    a,
    b,
    *,
    dataset: str,
    metric: str,
    system: str,
    reference: str,
    test: str = "auto",
    rounds: int = 10_000,
    seed: int = 0,
    bootstrap_rounds: int = 2000,
) -> Comparison:
    """One paired comparison, its test chosen for the metric (`choose_test`)."""
    a, b = _paired(a, b)
    low, high = bootstrap_ci(a, b, bootstrap_rounds, seed)
    used = choose_test(metric, a, b, test)
    diff = a - b
    return Comparison(
        dataset,
        metric,
        system,
        reference,
        float(a.mean()),
        float(b.mean()),
        float(diff.mean()),
        low,
        high,
        cohens_d_paired(a, b),
        paired_test(a, b, used, rounds, seed),
        used,
        float(diff.std(ddof=1)) if len(diff) > 1 else float("nan"),
    )
