"""Where does RecBole's published Pop on ml-1m_general come from? Pop is deterministic given the
split, so two things can move it: the random 8:1:1 draw, and which items are kept out of the
candidates at test time. This prints Pop's HR@10 and NDCG@10 (the harness's split and metrics)
over several split draws, and on the grid's own draw with only the training items excluded
(validation items left among the candidates), beside the published figures.

    .venv/bin/python benchmarks/anchors/pop_check.py [--interactions PARQUET] [--draws 5]

--interactions defaults to the anchors grid's prepared ml-1m-general
(results/anchors/data/ml-1m-general/interactions.parquet: `make bench-anchors`, or its prepare
step).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.split import ratio_split
from llm4rec.evaluation.metrics import hit_matrix, per_user_metrics

PUBLISHED = Path(__file__).with_name("published.csv")


def pop_scores(split: pd.DataFrame, excluded_phases: tuple[str, ...]) -> dict[str, float]:
    """Pop (training counts, ties by item id) ranked over the catalogue minus each user's items in
    `excluded_phases`; mean HR@10 and NDCG@10 over the test users."""
    train = split[split["phase"] == "train"]
    counts = train["item_id"].value_counts()
    catalogue = sorted(split["item_id"].unique(), key=lambda i: (-counts.get(i, 0), str(i)))
    excluded = split[split["phase"].isin(excluded_phases)].groupby("user_id")["item_id"].agg(set)
    targets = split[split["phase"] == "test"].groupby("user_id")["item_id"].agg(list)
    ranked = []
    for user in targets.index:
        seen = excluded.get(user, set())
        ranked.append([i for i in catalogue[: 10 + len(seen)] if i not in seen][:10])
    hits = hit_matrix(ranked, list(targets), 10)
    metrics = per_user_metrics(hits, np.array([len(t) for t in targets]), [10])
    return {m: float(metrics[m].mean()) for m in ("hr_at_10", "ndcg_at_10")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--interactions", default="results/anchors/data/ml-1m-general/interactions.parquet"
    )
    parser.add_argument("--draws", type=int, default=5)
    args = parser.parse_args()
    path = Path(args.interactions)
    if not path.is_file():
        raise SystemExit(f"{path}: not found (run make bench-anchors, or its prepare step, first)")
    grid = pd.read_parquet(path)
    if "phase" not in grid or "seq" not in grid:
        raise SystemExit(f"{path}: expected a prepared split with 'phase' and 'seq' columns")
    published = pd.read_csv(PUBLISHED)
    pop = published[published["anchor"] == "recbole_pop"].set_index("metric")["value"]
    print(f"published (RecBole benchmark): HR@10 {pop['hr']:.4f}  NDCG@10 {pop['ndcg']:.4f}")
    raw = grid.drop(columns="phase").rename(columns={"seq": "order"})
    for seed in range(args.draws):
        s = pop_scores(ratio_split(raw, (0.8, 0.1, 0.1), seed), ("train", "valid"))
        print(
            f"draw {seed}, training and validation excluded: HR@10 {s['hr_at_10']:.4f}  "
            f"NDCG@10 {s['ndcg_at_10']:.4f}"
        )
    s = pop_scores(grid, ("train",))
    print(
        f"the grid's draw, training only excluded: HR@10 {s['hr_at_10']:.4f}  "
        f"NDCG@10 {s['ndcg_at_10']:.4f}"
    )


if __name__ == "__main__":
    main()
