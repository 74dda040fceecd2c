"""The evaluator: candidate-set checks and run-level figures on a tiny split."""

import pandas as pd
import pytest

from llm4rec.evaluation.evaluate import RankingError, evaluate_rankings


def frame(lists: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(u, r + 1, i, 0.0) for u, items in lists.items() for r, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])


def test_tiny_split_histories(tiny_split):
    assert tiny_split.targets("test") == {"u1": ["d"], "u2": ["e"], "u3": ["b"]}
    assert tiny_split.targets("valid") == {"u1": ["c"], "u2": ["c"], "u3": ["f"]}
    assert tiny_split.history("test")["u1"] == ["a", "b", "c"]
    assert tiny_split.history("valid")["u3"] == ["a", "e"]


def test_metrics_coverage_and_popularity(tiny_split):
    # test candidates: u1 not {a,b,c}; u2 not {b,c}; u3 not {a,e,f}
    rankings = frame({"u1": ["d", "e"], "u2": ["a", "e"], "u3": ["c", "d"]})
    per_user, summary = evaluate_rankings(rankings, tiny_split, "test", [1, 2])
    assert list(per_user["hr_at_2"]) == [1.0, 1.0, 0.0]
    assert summary["hr_at_1"] == pytest.approx(1 / 3)
    assert summary["mrr_at_2"] == pytest.approx((1 + 0.5 + 0) / 3)
    # top-2 items recommended: d, e, a, c -> 4 of 6 catalogue items
    assert summary["coverage_at_2"] == pytest.approx(4 / 6)
    # training items: u1 a,b; u2 b; u3 a,e
    popularity = {"a": 2, "b": 2, "c": 0, "d": 0, "e": 1, "f": 0}
    top2 = ["d", "e", "a", "e", "c", "d"]
    assert summary["avg_popularity_at_2"] == pytest.approx(sum(popularity[i] for i in top2) / 6)
    assert list(per_user["history_length"]) == [3, 2, 3]


def test_history_item_in_ranking_is_refused(tiny_split):
    with pytest.raises(RankingError, match="u1 ranks history items"):
        evaluate_rankings(
            frame({"u1": ["a", "d"], "u2": ["a"], "u3": ["c"]}), tiny_split, "test", [2]
        )


def test_unknown_item_duplicate_and_missing_user_are_refused(tiny_split):
    with pytest.raises(RankingError, match="not in the catalogue"):
        evaluate_rankings(frame({"u1": ["zzz"], "u2": ["a"], "u3": ["c"]}), tiny_split, "test", [1])
    with pytest.raises(RankingError, match="duplicate"):
        evaluate_rankings(
            frame({"u1": ["d", "d"], "u2": ["a"], "u3": ["c"]}), tiny_split, "test", [1]
        )
    with pytest.raises(RankingError, match="no test ranking for 1 users"):
        evaluate_rankings(frame({"u1": ["d"], "u2": ["a"]}), tiny_split, "test", [1])


def test_popularity_buckets_are_equal_interaction_thirds():
    import pandas as pd

    from llm4rec.evaluation.evaluate import popularity_buckets

    # 10 interactions; share going to strictly more popular items: a 0, b and c 0.5, e 0.9, d 1.0
    popularity = pd.Series({"c": 2, "a": 5, "e": 1, "b": 2, "d": 0})
    buckets = popularity_buckets(popularity)
    assert buckets.to_dict() == {"c": "torso", "a": "head", "e": "tail", "b": "torso", "d": "tail"}


def test_per_user_slice_columns(tiny_split):
    rankings = frame({"u1": ["d", "e"], "u2": ["a", "e"], "u3": ["c", "d"]})
    per_user, _ = evaluate_rankings(rankings, tiny_split, "test", [2])
    assert per_user["target_item"].tolist() == ["d", "e", "b"]
    assert per_user["target_popularity"].tolist() == [0, 1, 2]


def test_user_sample_is_seeded_uniform_and_shared_by_every_model_asking_the_same_size():
    from llm4rec.evaluation.evaluate import sample_users

    users = [f"u{i:03d}" for i in range(500)]
    a = sample_users(users, 50, seed=0)
    # order of the input does not matter
    assert a == sample_users(list(reversed(users)), 50, seed=0)
    assert len(a) == len(set(a)) == 50 and a == sorted(a) and set(a) <= set(users)
    assert a != sample_users(users, 50, seed=1)
    assert sample_users(users, None) == users == sample_users(users, 10_000)
    # uniform: over many seeds every user is drawn about n/N of the time
    counts = pd.Series(
        [u for s in range(400) for u in sample_users(users, 50, seed=s)]
    ).value_counts()
    assert len(counts) == 500 and counts.mean() == pytest.approx(40) and counts.max() < 70


def test_declared_user_sample_is_scored_alone_and_must_be_covered(tiny_split):
    rankings = frame({"u1": ["d", "e"], "u3": ["c", "b"]})  # u2 is not in the sample
    per_user, summary = evaluate_rankings(rankings, tiny_split, "test", [1, 2], users=["u1", "u3"])
    assert list(per_user["user_id"]) == ["u1", "u3"] and list(per_user["hr_at_2"]) == [1.0, 1.0]
    assert summary["n_users"] == 2 and summary["hr_at_1"] == pytest.approx(0.5)
    with pytest.raises(RankingError, match="no test ranking for 1 users"):
        evaluate_rankings(frame({"u1": ["d"]}), tiny_split, "test", [1], users=["u1", "u3"])
    with pytest.raises(RankingError, match=r"users \['u9'\] are not test users"):
        evaluate_rankings(rankings, tiny_split, "test", [1], users=["u1", "u9"])


def test_a_catalogue_smaller_than_the_ranking_depth_ranks_what_exists(tmp_path, capsys):
    """7 items, 5 per user: 3 candidates per user for the test ranking at depth 20. Every model
    returns what exists (no "selected index k out of range"), and the evaluator scores it: @20
    equals @5 for each user."""
    import yaml

    from llm4rec.cli import main
    from llm4rec.io import read_json

    rows = "".join(f"u{u}\ti{(u + j) % 7}\t{j}\n" for u in range(6) for j in range(5))
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + rows)
    grid = {
        "name": "t",
        "results_dir": str(tmp_path / "results"),
        "seeds": [0],
        "evaluation": {"cutoffs": [5, 20]},
        "datasets": {
            "toy": {
                "source": "atomic",
                "path": str(tmp_path),
                "atomic_name": "toy",
                "k_core": {"user": 3, "item": 1},
            }
        },
        "models": [
            {"name": "mostpop"},
            {"name": "bpr", "params": {"epochs": 1, "show_progress": False}},
            {"name": "emb_knn"},
        ],
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    config = str(tmp_path / "grid.yaml")
    assert main(["prepare", "--config", config, "--dataset", "toy"]) == 0
    for model in ("mostpop", "bpr", "emb_knn"):
        for command in ("train", "evaluate"):
            assert (
                main(
                    [
                        command,
                        "--config",
                        config,
                        "--dataset",
                        "toy",
                        "--model",
                        model,
                        "--seed",
                        "0",
                    ]
                )
                == 0
            ), capsys.readouterr().err[-2000:]
        run = tmp_path / "results" / "t" / "runs" / "toy" / model / "seed0"
        rankings = pd.read_parquet(run / "rankings_test.parquet")
        # 7 items - 4 in each test history
        assert rankings.groupby("user_id").size().tolist() == [3] * 6
        per_user = pd.read_parquet(run / "per_user_test.parquet")
        assert (per_user["hr_at_20"] == per_user["hr_at_5"]).all() and (
            per_user["ndcg_at_20"] == per_user["ndcg_at_5"]
        ).all()
        # the target is always one of the 3
        assert read_json(run / "metrics.json")["test"]["hr_at_20"] == 1.0
