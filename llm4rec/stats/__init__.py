"""Significance tests, multiple-comparison corrections and effect sizes over per-user metrics.

Pure functions over arrays (ranx-style): no runs, files or models in sight.

- Paired tests between two systems on the same users: paired t-test, Wilcoxon signed-rank,
  and a two-sided paired randomization (sign-flip) test.
- Seeds: ``seed_aware_arrays`` averages each user's metric over seeds before the paired
  test (the unit of analysis is the user; seed noise is averaged out, not counted as extra
  samples). ``seed_mean_test`` is the test that counts training variance: a paired t-test on
  the per-seed means (n = number of seeds); the report gives both.
- Corrections over a family of comparisons: Holm-Bonferroni (default), Bonferroni,
  Benjamini-Hochberg.
- Effect sizes: mean difference with a percentile bootstrap 95% CI, and Cohen's d for
  paired samples (mean difference / standard deviation of the differences, d_z).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

TESTS = ("t", "wilcoxon", "randomization")
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


def paired_test(a, b, test: str = "t", rounds: int = 10_000, seed: int = 0) -> float:
    if test == "t":
        return paired_t_test(a, b)
    if test == "wilcoxon":
        return wilcoxon_test(a, b)
    if test == "randomization":
        return randomization_test(a, b, rounds, seed)
    raise ValueError(f"unknown test '{test}' (known: {', '.join(TESTS)})")


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


def seed_mean_test(per_seed_a: list[np.ndarray], per_seed_b: list[np.ndarray]) -> float:
    """Paired t-test on per-seed means (seeds paired by index); 1.0 with fewer than 2 seeds."""
    means_a = [float(np.mean(x)) for x in per_seed_a]
    means_b = [float(np.mean(x)) for x in per_seed_b]
    if len(means_a) < 2:
        return 1.0
    return paired_t_test(means_a, means_b)


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
    test: str = "t",
    rounds: int = 10_000,
    seed: int = 0,
    bootstrap_rounds: int = 2000,
) -> Comparison:
    a, b = _paired(a, b)
    low, high = bootstrap_ci(a, b, bootstrap_rounds, seed)
    return Comparison(
        dataset,
        metric,
        system,
        reference,
        float(a.mean()),
        float(b.mean()),
        float((a - b).mean()),
        low,
        high,
        cohens_d_paired(a, b),
        paired_test(a, b, test, rounds, seed),
    )
