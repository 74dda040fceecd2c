"""Ranking metrics against values computed by hand."""

import math

import numpy as np
import pytest

from llm4rec.evaluation.metrics import hit_matrix, per_user_metrics


def metrics_for(ranked, targets, cutoffs):
    hits = hit_matrix(ranked, targets, max(cutoffs))
    return per_user_metrics(hits, np.array([len(t) for t in targets]), cutoffs)


def test_single_target_at_rank_three():
    m = metrics_for([["a", "b", "c", "d", "e"]], [["c"]], [1, 2, 5])
    assert m["hr_at_2"][0] == 0.0 and m["hr_at_5"][0] == 1.0
    assert m["recall_at_5"][0] == 1.0
    assert m["ndcg_at_5"][0] == pytest.approx(1 / math.log2(4))  # 0.5
    assert m["ndcg_at_2"][0] == 0.0
    assert m["mrr_at_5"][0] == pytest.approx(1 / 3)
    assert m["mrr_at_2"][0] == 0.0


def test_two_targets_ndcg_uses_ideal_of_min_targets_and_k():
    m = metrics_for([["a", "x", "y", "d"]], [["a", "d"]], [1, 2, 4])
    dcg = 1 + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg_at_4"][0] == pytest.approx(dcg / idcg)  # 0.877215...
    assert m["ndcg_at_4"][0] == pytest.approx(0.8772153153380493)
    assert m["ndcg_at_1"][0] == 1.0  # ideal DCG@1 is 1 even with two targets
    assert m["recall_at_2"][0] == 0.5 and m["recall_at_4"][0] == 1.0
    assert m["mrr_at_4"][0] == 1.0


def test_miss_and_short_list_score_zero():
    m = metrics_for([["x", "y"], []], [["a"], ["b"]], [5])
    for name in ("hr_at_5", "recall_at_5", "ndcg_at_5", "mrr_at_5"):
        assert list(m[name]) == [0.0, 0.0]


def test_per_user_vectors_keep_user_order():
    m = metrics_for([["a", "b"], ["b", "a"]], [["a"], ["a"]], [2])
    assert list(m["mrr_at_2"]) == [1.0, 0.5]
    assert m["ndcg_at_2"][1] == pytest.approx(1 / math.log2(3))


def test_cutoff_deeper_than_ranking_is_refused():
    hits = np.zeros((1, 5), dtype=bool)
    with pytest.raises(ValueError, match="exceeds the ranking depth"):
        per_user_metrics(hits, np.array([1]), [10])
