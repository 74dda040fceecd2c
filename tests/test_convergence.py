"""The convergence flag (llm4rec.evaluation.convergence) on hand-built validation curves: rising,
flat, falling, peaked early, too short; and read from a run's recorded curve."""

import pytest

from llm4rec.evaluation.convergence import convergence_verdict, run_convergence


@pytest.mark.parametrize(
    ("curve", "verdict"),
    [
        ([0.01, 0.03, 0.05, 0.07, 0.08], "still improving"),  # best last, still rising
        ([0.05, 0.05, 0.05, 0.05], "converged"),  # flat: best first, slope 0
        ([0.08, 0.07, 0.05, 0.03], "converged"),  # falling: peaked at the start
        ([0.02, 0.06, 0.07, 0.069, 0.068, 0.067, 0.066, 0.065], "converged"),  # peaked midway
        ([0.01, 0.04, 0.05, 0.05, 0.051], "still improving"),  # a last small gain counts
        ([0.05], "unknown"),  # one evaluation: no trend to read
        ([], "unknown"),
    ],
)
def test_verdicts_on_hand_built_curves(curve, verdict):
    assert convergence_verdict(curve) == verdict


def test_the_tail_is_the_last_tenth_and_its_slope_decides():
    # 8 evaluations: the tail is the last one; the best at index 6 is before it
    assert convergence_verdict([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.9, 0.1]) == "converged"
    assert convergence_verdict([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]) == "still improving"
    # 30 evaluations, early-stopped 3 after its best (patience 3): the tail (last 3) misses it
    stopped = [0.01 * i for i in range(27)] + [0.25, 0.24, 0.23]
    assert convergence_verdict(stopped) == "converged"
    # 30 evaluations, the best at the second to last, the last two rising on average
    assert convergence_verdict([0.01 * i for i in range(28)] + [0.3, 0.29]) == "still improving"


def test_a_run_reads_its_selection_metrics_curve_and_an_untrained_run_is_said_so():
    fit = {"valid_curve": [{"step": s, "ndcg_at_10": v} for s, v in ((20, 0.01), (40, 0.03))]}
    record = run_convergence(fit, "ndcg_at_10", trainable=1000)
    assert record == {
        "verdict": "still improving",
        "evaluations": 2,
        "metric": "ndcg_at_10",
        "best": 0.03,
        "last": 0.03,
    }
    assert run_convergence({"epochs": 0}, "ndcg_at_10")["verdict"] == "untrained"
    assert run_convergence({}, "ndcg_at_10", trainable=0)["verdict"] == "untrained"
    assert run_convergence({}, "hr_at_10", trainable=5)["verdict"] == "unknown"
