"""Finished runs built on disk with known outcomes (report, anchors, results-page tests)."""

import numpy as np
import pandas as pd

from llm4rec.io import write_json, write_parquet

COST = {
    "train_time_s": 10.0,
    "inference_ms_per_user": 0.5,
    "inference_time_test_s": 0.1,
    "peak_memory_mb": 500.0,
    "parameters_total": 1000,
    "parameters_trainable": 1000,
}


def make_run(
    root,
    dataset,
    model,
    paradigm,
    seed,
    hits,
    checksum="s1",
    users=None,
    metrics=None,
    evaluation=None,
    valid=None,
    popularity=None,
    values=None,
    run=None,
):
    """A finished run whose every metric per user is `hits` (0/1 per user), or `values[metric]`;
    validation means equal the test means unless `valid` (one value for every metric) says
    otherwise; `run` adds to its run.json."""
    folder = root / dataset / model / f"seed{seed}"
    users = users or [f"u{i}" for i in range(len(hits))]
    per_user = pd.DataFrame(
        {
            "user_id": users,
            "n_targets": 1,
            "history_length": np.arange(len(hits)) % 40 + 5,
            "target_item": "i",
            "target_popularity": 1 if popularity is None else popularity,
            "target_bucket": np.array(["head", "torso", "tail"])[np.arange(len(hits)) % 3],
        }
    )
    metrics = metrics or ("hr_at_10", "ndcg_at_10", "hr_at_20", "ndcg_at_20")
    for metric in metrics:
        per_user[metric] = (values or {}).get(metric, hits)
    write_parquet(folder / "per_user_test.parquet", per_user)
    means = {m: float(per_user[m].mean()) for m in metrics}
    write_json(
        folder / "metrics.json",
        {
            "dataset": dataset,
            "model": model,
            "paradigm": paradigm,
            "seed": seed,
            "config_hash": "x",
            "cost": COST,
            "test": means,
            "valid": means if valid is None else dict.fromkeys(metrics, valid),
            "evaluation": evaluation or {},
        },
    )
    split_cfg = {"dataset_config": {"split": {"method": "leave_one_out"}}}
    record = {"run": split_cfg, "split_checksums": {"interactions.parquet": checksum}}
    for key, value in (run or {}).items():
        record[key] = record.get(key, {}) | value if isinstance(value, dict) else value
    write_json(folder / "run.json", record)
