"""One grid cell end to end: prepare a dataset's split; train + rank one model; evaluate it.

Each function is one Snakemake rule's job (see cli.py) and writes its outputs atomically;
run.json / metrics.json are written last, so their presence means the stage finished.
"""

from __future__ import annotations

import random
import resource
import time

import numpy as np
import pandas as pd

from llm4rec.config import Grid
from llm4rec.data.preprocess import preprocess
from llm4rec.data.sources import load_source
from llm4rec.data.split import Split, make_split, read_split, write_split
from llm4rec.environment import environment
from llm4rec.evaluation.evaluate import evaluate_rankings
from llm4rec.io import read_json, write_json, write_parquet
from llm4rec.models import MODELS, build_model


def prepare_dataset(grid: Grid, dataset: str) -> Split:
    """Load, preprocess and split one dataset; write the split once for every model."""
    cfg = grid.dataset_config(dataset)
    raw = load_source(cfg["source"], path=cfg.get("path"), name=cfg.get("atomic_name"),
                      text_fields=cfg.get("text_fields"), raw_dir=grid.results_dir / "raw")
    kept, counts = preprocess(raw.interactions, rating_threshold=cfg["rating_threshold"], dedup=cfg["dedup"],
                              min_user=cfg["k_core"]["user"], min_item=cfg["k_core"]["item"], dataset=dataset)
    labelled = make_split(kept, raw.items, cfg["split"])
    meta = {"dataset": dataset, "config": cfg, "preprocessing_counts": counts}
    return write_split(grid.split_dir(dataset), labelled, raw.items, meta)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and GPU peak when on CUDA), in MiB."""
    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if torch.cuda.is_available():
        return max(rss, torch.cuda.max_memory_allocated() / 2**20)
    return rss


def train_and_rank(grid: Grid, dataset: str, model: str, seed: int) -> dict:
    """Fit one model on the split, rank top-K for every validation and test user, export."""
    import torch

    run_dir = grid.run_dir(dataset, model, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    split = read_split(grid.split_dir(dataset))
    torch.set_num_threads(grid.threads)
    seed_everything(seed)
    k = max(grid.cutoffs)
    recommender = build_model(model, grid.model_params(model, dataset), seed, grid.device)
    print(f"[llm4rec] training {model} on {dataset} (seed {seed}) -> {run_dir}", flush=True)
    start = time.perf_counter()
    fit_info = recommender.fit(split, run_dir / "work")
    train_time = time.perf_counter() - start
    inference = {}
    for phase in ("valid", "test"):
        history = split.history(phase)
        users = sorted(split.targets(phase))
        start = time.perf_counter()
        rankings = recommender.rank({u: history.get(u, []) for u in users}, k)
        inference[phase] = time.perf_counter() - start
        write_parquet(run_dir / f"rankings_{phase}.parquet", rankings)
    exported = recommender.export(run_dir, split) if hasattr(recommender, "export") else {}
    n_test = split.meta["stats"]["test_users"]
    record = {
        "run": grid.run_config(dataset, model, seed),
        "config_hash": grid.run_hash(dataset, model, seed),
        "split_checksums": split.meta["checksums"],
        "fit": fit_info,
        "cost": {
            "train_time_s": train_time,
            "inference_time_valid_s": inference["valid"],
            "inference_time_test_s": inference["test"],
            "inference_ms_per_user": 1000 * inference["test"] / max(n_test, 1),
            "peak_memory_mb": peak_memory_mb(),
            "parameters_total": int(fit_info.get("parameters_total", 0)),
            "parameters_trainable": int(fit_info.get("parameters_trainable", 0)),
        },
        "exported": exported,
        "device": grid.device,
        "environment": environment(),
    }
    write_json(run_dir / "run.json", record)
    print(f"[llm4rec] {model}/{dataset}/seed{seed}: train {train_time:.1f}s, outputs in {run_dir}", flush=True)
    return record


def evaluate_run(grid: Grid, dataset: str, model: str, seed: int) -> dict:
    """Score a run's rankings with the one evaluator; write per-user metrics and means."""
    run_dir = grid.run_dir(dataset, model, seed)
    split = read_split(grid.split_dir(dataset))
    run = read_json(run_dir / "run.json")
    if run["split_checksums"] != split.meta["checksums"]:
        raise ValueError(f"{run_dir}/run.json: trained on a different split than {grid.split_dir(dataset)}; retrain it")
    result = {"dataset": dataset, "model": model, "paradigm": MODELS[model].paradigm, "seed": seed,
              "config_hash": run["config_hash"], "cost": run["cost"]}
    for phase in ("valid", "test"):
        path = run_dir / f"rankings_{phase}.parquet"
        per_user, summary = evaluate_rankings(pd.read_parquet(path), split, phase, grid.cutoffs, source=str(path))
        write_parquet(run_dir / f"per_user_{phase}.parquet", per_user)
        result[phase] = summary
    write_json(run_dir / "metrics.json", result)
    return result

