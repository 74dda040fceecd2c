"""Small validation-only hyper-parameter search for a baseline (the test split is never read).

    python benchmarks/tune_baselines.py --config benchmarks/default.yaml --dataset ml-100k \
        --model bpr --search '{"learning_rate": [0.001, 0.005, 0.01], "embedding_size": [64]}'

Each candidate = the grid's params for (model, dataset) updated with one point of the search
space, trained on seed 0 and scored by our evaluator on the validation split. Writes
results/tuning/<dataset>_<model>.csv and prints the best point; copy it into the grid config.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd
import torch

from llm4rec.config import load_grid
from llm4rec.data.split import read_split
from llm4rec.evaluation.evaluate import evaluate_rankings
from llm4rec.io import write_text
from llm4rec.models import MODELS, build_model
from llm4rec.runner import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/default.yaml")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--search", required=True, help="JSON {param: [values]}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    grid = load_grid(args.config)
    split = read_split(grid.split_dir(args.dataset))
    history, users = split.history("valid"), sorted(split.targets("valid"))
    space = json.loads(args.search)
    torch.set_num_threads(grid.threads)
    rows = []
    for values in itertools.product(*space.values()):
        point = dict(zip(space, values, strict=True))
        params = grid.model_params(args.model, args.dataset) | point
        if MODELS[args.model].hyperparameters:  # a RecBole model: no progress bars
            params["show_progress"] = False
        seed_everything(args.seed)
        model = build_model(
            args.model, params, args.seed, grid.device, selection=grid.selection_metric(args.model)
        )
        start = time.perf_counter()
        fit = model.fit(split, Path(grid.grid_dir) / "tuning" / args.dataset / args.model / "work")
        elapsed = time.perf_counter() - start
        rankings = model.rank({u: history[u] for u in users}, max(grid.cutoffs))
        _, summary = evaluate_rankings(rankings, split, "valid", grid.cutoffs)
        row = point | {
            "valid_ndcg_at_10": summary["ndcg_at_10"],
            "valid_hr_at_10": summary["hr_at_10"],
            "epochs": fit.get("epochs_trained", fit.get("epochs")),
            "train_time_s": round(elapsed, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows).sort_values("valid_ndcg_at_10", ascending=False)
    out = Path(grid.results_dir) / "tuning" / f"{args.dataset}_{args.model}.csv"
    write_text(out, table.to_csv(index=False))
    print(table.to_string(index=False))
    print(f"best: {json.dumps(table.iloc[0].to_dict())}\nwritten to {out}")


if __name__ == "__main__":
    main()
