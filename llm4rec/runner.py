"""One grid cell end to end: prepare a dataset's split; train + rank one model; evaluate it.

Each function is one Snakemake rule's job (see cli.py) and writes its outputs atomically;
run.json / metrics.json are written last, so their presence means the stage finished (the
files of a run folder: llm4rec.layout).
"""

from __future__ import annotations

import dataclasses
import os
import random
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llm4rec import layout
from llm4rec.config import Grid, InputSource, RunSpec
from llm4rec.costs import token_costs
from llm4rec.data.atomic import DataError
from llm4rec.data.preprocess import preprocess
from llm4rec.data.requests import phase_requests, worded
from llm4rec.data.sources import load_source
from llm4rec.data.split import (
    Split,
    hold_out_new_items,
    leave_one_out_split,
    make_split,
    read_split,
    tied_test_users,
    write_split,
)
from llm4rec.determinism import (
    apply_determinism,
    determinism_record,
    recording_nondeterministic_ops,
    weights_digest,
)
from llm4rec.environment import environment, redact
from llm4rec.evaluation.convergence import run_convergence
from llm4rec.evaluation.evaluate import EVALUATOR_VERSION, evaluate_rankings, sample_users
from llm4rec.io import read_json, sha256_file, write_json, write_parquet
from llm4rec.models import (
    ARTIFACTS,
    MODELS,
    ResolvedInput,
    build_row,
    check_params,
    import_object,
)


def prepare_dataset(grid: Grid, dataset: str) -> Split:
    """Load, preprocess and split one dataset; write the split once for every model."""
    cfg = grid.dataset_config(dataset)
    raw = load_source(
        cfg["source"],
        path=cfg.get("path"),
        name=cfg.get("atomic_name"),
        text_fields=cfg.get("text_fields"),
        raw_dir=grid.results_dir / "raw",
        unknown_items=cfg.get("unknown_items", "keep"),
    )
    kept, counts = preprocess(
        raw.interactions,
        rating_threshold=cfg["rating_threshold"],
        dedup=cfg["dedup"],
        min_user=cfg["k_core"]["user"],
        min_item=cfg["k_core"]["item"],
        dataset=dataset,
        sample_users=cfg.get("sample_users"),
        seed=cfg["split"].get("seed", 0),
    )
    labelled = make_split(kept, raw.items, cfg["split"])
    meta = {"dataset": dataset, "config": cfg, "preprocessing_counts": counts}
    method, rule = (
        cfg["split"].get("method", "leave_one_out"),
        cfg["split"].get("test_ties", "keep"),
    )
    if method == "leave_one_out" and rule != "keep":  # what the rule changed: the ties under `keep`
        kept_ties = leave_one_out_split(
            kept, cfg["split"].get("tie_break", "file_order"), cfg["split"].get("seed", 0)
        )
        meta["test_ties"] = {
            "rule": rule,
            "tied_users_if_kept": len(tied_test_users(kept_ties)),
            "users_if_kept": int(kept_ties["user_id"].nunique()),
        }
    if cfg.get("new_items"):
        labelled, meta["new_items"] = hold_out_new_items(
            labelled,
            cfg["new_items"],
            cfg["split"].get("seed", 0),
            cfg.get("new_items_by", "random"),
            raw.items,
        )
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


def evaluated_users(grid: Grid, model: str, split: Split, phase: str) -> list[str]:
    """The phase's users this model is scored on: all, or its declared seeded sample; a variant's
    sample no larger than its parent's is drawn within the parent's users (nested: an exact-ranking
    row's users are users its parent ranked; an equal size gives the parent's own)."""
    evaluation = grid.model_evaluation(model)
    n, seed = evaluation[f"{phase}_users"], evaluation["sample_seed"]
    parent = MODELS[model].parent if model in MODELS else None
    if n is not None and parent in grid.models:
        pool = evaluated_users(grid, parent, split, phase)
        if n <= len(pool):
            return sample_users(pool, n, seed)
    return sample_users(list(split.targets(phase)), n, seed)


def resolve_inputs(grid: Grid, spec: RunSpec, split: Split) -> dict[str, ResolvedInput]:
    """The files one run consumes, checked against this run's split and the grid's upstream
    configuration; every mismatch names both sides."""
    consumer, dataset = spec.run_dir, spec.dataset
    resolved = {}
    for slot, source in spec.sources.items():
        record_path = (
            source.folder.parent / layout.RUN_JSON if source.kind == "run" else source.marker
        )
        what = f"{consumer} consumes '{slot}' from {source.kind} '{source.name}'" + (
            f" seed {source.seed}" if source.seed is not None else ""
        )
        if not record_path.is_file():
            raise DataError(
                f"{what}: {record_path} not found; that {source.kind} has not finished (Snakemake "
                "runs it first)"
            )
        record = read_json(record_path)
        upstream = source.dataset or dataset  # a transfer row's source run: its own dataset
        expected = (
            split.meta["checksums"]
            if upstream == dataset
            else read_json(grid.split_dir(upstream) / layout.SPLIT_JSON)["checksums"]
        )
        if record.get("split_checksums") != expected:
            raise DataError(
                f"{what}: {record_path} was built on another split than {grid.split_dir(upstream)} "
                f"(checksums {record.get('split_checksums')} vs {expected}); rebuild it"
            )
        if record.get("config_hash") != source.config_hash:
            raise DataError(
                f"{what}: {record_path} has config hash {record.get('config_hash')}, the grid now "
                f"gives {source.config_hash}; rerun the upstream first"
            )
        paths = {name: source.folder / name for name in source.files}
        written = record.get("files", {})  # name -> sha256, as the upstream wrote them
        for name, path in paths.items():
            if not path.is_file():
                raise DataError(
                    f"{what}: {path} not found (the {source.kind} wrote: "
                    f"{', '.join(sorted(p.name for p in source.folder.glob('*'))) or 'nothing'})"
                )
            if name in written and sha256_file(path) != written[name]:
                raise DataError(
                    f"{what}: {path} differs from the file {record_path} records (sha256); it was "
                    "modified after it was written: rerun the upstream"
                )
        label = (
            f"{source.name}/seed{source.seed}" + (f" on {source.dataset}" if source.dataset else "")
            if source.kind == "run"
            else f"{source.name}/{source.config_hash}"
        )
        resolved[slot] = ResolvedInput(
            paths, f"{source.kind} {label} (config {source.config_hash})"
        )
    return resolved


def build_artifact(grid: Grid, dataset: str, name: str, key: str) -> dict:
    """Build one artifact the grid's runs consume (the `artifact` rule); artifact.json last."""
    sources = grid.artifacts()
    if (dataset, name, key) not in sources:
        known = [f"{d}/{n}/{k}" for d, n, k in sorted(sources)]
        raise DataError(
            f"{grid.path}: no run of this grid consumes artifact {dataset}/{name}/{key} "
            f"(consumed: {', '.join(known) or 'none'})"
        )
    source: InputSource = sources[(dataset, name, key)]
    spec = ARTIFACTS[name]
    split = read_split(grid.split_dir(dataset))
    apply_determinism(grid.threads, grid.device)
    start = time.perf_counter()
    with recording_nondeterministic_ops() as nondeterministic:
        info = import_object(spec.builder)(
            split, check_params(spec, source.params), source.seed, source.folder
        )
    record = {
        "artifact": name,
        "config_hash": key,
        "params": source.params,
        "seed": source.seed,
        "split_checksums": split.meta["checksums"],
        "build_time_s": time.perf_counter() - start,
        "info": info,
        "files": {f: sha256_file(source.folder / f) for f in spec.files},
        "determinism": determinism_record(nondeterministic),
        "environment": environment(),
    }
    write_json(source.marker, redact(record))
    print(f"[llm4rec] artifact {name} for {dataset} -> {source.folder}", flush=True)
    return record


def train_and_rank(grid: Grid, dataset: str, model: str, seed: int) -> dict:
    """Fit one model on the split, rank top-K for its validation and test users, export."""
    from llm4rec.llm import distributed  # torch: imported by the jobs that train, not by evaluate
    from llm4rec.llm.retention import SHIPPED_ENV

    spec = grid.run_spec(dataset, model, seed)  # the cell, resolved once
    run_dir = spec.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    split = read_split(grid.split_dir(dataset))
    inputs = resolve_inputs(grid, spec, split)
    device = grid.device  # `auto` settled here, on the job's machine
    apply_determinism(spec.threads, device)
    seed_everything(seed)
    # the validated sample, wherever this job runs
    os.environ[SHIPPED_ENV] = str(grid.grid_dir / layout.TEXT_RETENTION)
    evaluation = spec.evaluation
    k = max(evaluation["cutoffs"])
    recommender = build_row(spec.build_spec(device, inputs))
    print(f"[llm4rec] training {model} on {dataset} (seed {seed}) -> {run_dir}", flush=True)
    # wall-clock epoch seconds: MLflow's run start, end and timeline
    timing = {"train_start": time.time()}
    with recording_nondeterministic_ops() as nondeterministic:
        start = time.perf_counter()
        fit_info = recommender.fit(split, run_dir / layout.WORK)
        train_time = time.perf_counter() - start
        timing["train_end"] = timing["rank_start"] = time.time()
        inference, inference_cost, n_users = {}, {}, {}
        (run_dir / layout.COUNTERFACTUAL_RANKINGS).unlink(missing_ok=True)  # an earlier run's
        for phase in layout.PHASES:
            history = split.history(phase)
            users = evaluated_users(grid, model, split, phase)
            n_users[phase] = len(users)
            start = time.perf_counter()
            rankings = recommender.rank(
                {u: history.get(u, []) for u in users},
                k,
                **requests(recommender, split, phase, users),
            )
            inference[phase] = time.perf_counter() - start
            inference_cost[phase] = recommender.inference_cost()  # e.g. tokens processed by an LLM
            if distributed.is_main():
                write_parquet(run_dir / layout.rankings(phase), rankings)
            if phase == "test" and reads_requests(recommender) and grid.steer():
                # the same users, each with a request that does not come from its target
                start = time.perf_counter()
                counterfactual = recommender.rank(
                    {u: history.get(u, []) for u in users},
                    k,
                    **requests(recommender, split, phase, users, grid.steer()),
                )
                inference["test_counterfactual"] = time.perf_counter() - start
                recommender.inference_cost()  # counted apart from the test phase's
                if distributed.is_main():
                    write_parquet(run_dir / layout.COUNTERFACTUAL_RANKINGS, counterfactual)
        timing["rank_end"] = time.time()
    # several processes (llm4rec.llm.distributed): process 0 writes the run
    if not distributed.is_main():
        return {}
    # a declared output folder of the train rule, empty if nothing is exported
    exports = Path(run_dir) / layout.EXPORTS
    exports.mkdir(exist_ok=True)
    exported = recommender.export(exports, split)
    export_files = {p.name: sha256_file(p) for p in sorted(exports.iterdir()) if p.is_file()}
    n_test = n_users["test"]
    record = {
        "run": spec.record,
        "config_hash": spec.hash,
        "split_checksums": split.meta["checksums"],
        "fit": fit_info,
        "cost": {
            "train_time_s": train_time,
            "inference_time_valid_s": inference["valid"],
            "inference_time_test_s": inference["test"],
            **(
                {"inference_time_test_counterfactual_s": inference["test_counterfactual"]}
                if "test_counterfactual" in inference
                else {}
            ),
            "inference_ms_per_user": 1000 * inference["test"] / max(n_test, 1),
            "peak_memory_mb": peak_memory_mb(),
            "parameters_total": int(fit_info.get("parameters_total", 0)),
            "parameters_trainable": int(fit_info.get("parameters_trainable", 0)),
            **token_costs(fit_info, inference_cost["test"], n_test),
            **declared_costs(model, fit_info, inference_cost["test"]),
        },
        "inference_cost": {phase: cost for phase, cost in inference_cost.items() if cost},
        "timing": timing,
        "inputs": {
            slot: {"source": r.source, "files": {n: str(p) for n, p in r.paths.items()}}
            for slot, r in inputs.items()
        },
        "selection_metric": spec.selection,
        # still improving at the end of its budget? (from its own validation curve)
        "convergence": run_convergence(
            fit_info, spec.selection, int(fit_info.get("parameters_trainable", 0))
        ),
        "evaluation": evaluation
        | request_record(recommender)
        | {
            "ranking_depth": k,
            "n_users": n_users,
            "all_users": {p: len(split.targets(p)) for p in ("valid", "test")},
        },
        "exported": exported,
        "files": export_files,  # exports/ as written (sha256): consumers check them
        # the model as it ranked: equal digests, bit-identical weights
        "weights_sha256": weights_digest(recommender),
        "device": device,
        "determinism": determinism_record(nondeterministic),
        "environment": environment(),
    }
    write_json(run_dir / layout.RUN_JSON, redact(record))  # no credential from the environment
    print(
        f"[llm4rec] {model}/{dataset}/seed{seed}: train {train_time:.1f}s, outputs in {run_dir}",
        flush=True,
    )
    return record


def reads_requests(recommender: Any) -> bool:
    """Whether rank takes one request per user (its `request_template`: a steered row, AlphaRec
    with an intention, RTA's steered reindex)."""
    return getattr(recommender, "request_template", None) is not None


def requests(
    recommender: Any, split: Split, phase: str, users: list[str], steer: dict | None = None
) -> dict[str, Any]:
    """rank's `requests` for a model that reads them: one per user, written from the phase's
    target (the oracle request) or, given the grid's `steer` settings, drawn so that the target
    does not satisfy it (the counterfactual request, seeded as the evaluator draws it;
    llm4rec.data.requests)."""
    if not reads_requests(recommender):
        return {}
    template = recommender.request_template
    kind, seed = ("counterfactual", steer["counterfactual_seed"]) if steer else ("oracle", 0)
    return {"requests": worded(phase_requests(split, phase, users, template, kind, seed), template)}


def request_record(recommender: Any) -> dict[str, Any]:
    """What run.json says about the requests rank was given (none: nothing)."""
    if not reads_requests(recommender):
        return {}
    return {"requests": dataclasses.asdict(recommender.request_template)}


def declared_costs(model: str, fit_info: dict, test_cost: dict | None = None) -> dict[str, float]:
    """The row's own cost figures, each declared in ModelSpec.costs: fit_info["costs"],
    and those of its declared figures the test phase's inference_cost reports (an exact-ranking
    row's beam agreement)."""
    declared = {c.key for c in MODELS[model].costs}
    reported = fit_info.get("costs", {}) | {
        key: value for key, value in (test_cost or {}).items() if key in declared
    }
    undeclared = sorted(set(reported) - declared)
    if undeclared:
        raise ValueError(
            f"{model}: fit reports cost '{undeclared[0]}', which its ModelSpec.costs does not "
            f"declare (declared: {', '.join(sorted(declared)) or 'none'})"
        )
    return {key: float(value) for key, value in reported.items()}


def with_steerability(
    per_user: pd.DataFrame,
    summary: dict,
    rankings: pd.DataFrame,
    split: Split,
    steer: dict,
    counterfactual: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict]:
    """The test phase's steerability columns (llm4rec.evaluation.steerability) joined to its
    per-user metrics, and their means (over the users a request could be written for) in its
    summary. `counterfactual`: the rankings a model that reads requests gave with the
    counterfactual requests."""
    from llm4rec.evaluation.evaluate import rankings_to_lists
    from llm4rec.evaluation.steerability import steer_frame

    targets = split.targets("test")
    users = per_user["user_id"].tolist()
    frame = steer_frame(
        rankings_to_lists(rankings),
        {u: targets[u] for u in users},
        split.items,
        steer["templates"],
        steer["cutoffs"],
        histories=split.history("test"),
        filter_depth=steer["filter_depth"],
        counterfactual_seed=steer["counterfactual_seed"],
        counterfactual_lists=(
            rankings_to_lists(counterfactual) if counterfactual is not None else None
        ),
    )
    means = {
        c: float(frame[c].mean())
        for c in frame.columns
        if c != "user_id" and pd.api.types.is_numeric_dtype(frame[c])
    }
    return per_user.merge(frame, on="user_id", how="left", validate="one_to_one"), summary | means


def steer_record(steer: dict) -> dict[str, Any]:
    """The steer settings a run was scored with, as metrics.json records them (reproduce rebuilds
    `evaluation.steer` from it)."""
    first = next(iter(steer["templates"].values()))
    return {
        "templates": {name: t.template for name, t in steer["templates"].items()},
        "cutoffs": steer["cutoffs"],
        "filter_depth": steer["filter_depth"],
        "counterfactual_seed": steer["counterfactual_seed"],
        "genres_field": first.genres_field,
        "year_field": first.year_field,
    }


def evaluate_run(grid: Grid, dataset: str, model: str, seed: int) -> dict:
    """Score a run's rankings with the one evaluator; write per-user metrics and means."""
    run_dir = grid.run_dir(dataset, model, seed)
    split = read_split(grid.split_dir(dataset))
    run = read_json(run_dir / layout.RUN_JSON)
    if run["split_checksums"] != split.meta["checksums"]:
        raise ValueError(
            f"{run_dir / layout.RUN_JSON}: trained on a different split than "
            f"{grid.split_dir(dataset)}; retrain it"
        )
    result = {
        "dataset": dataset,
        "model": model,
        "paradigm": MODELS[model].paradigm,
        "seed": seed,
        "config_hash": run["config_hash"],
        "evaluator": EVALUATOR_VERSION,
        "cost": run["cost"],
        "evaluation": run.get("evaluation", {}),
    }
    cutoffs, steer = grid.model_evaluation(model)["cutoffs"], grid.steer()
    for phase in layout.PHASES:
        path = run_dir / layout.rankings(phase)
        rankings = pd.read_parquet(path)
        per_user, summary = evaluate_rankings(
            rankings,
            split,
            phase,
            cutoffs,
            source=str(path),
            users=evaluated_users(grid, model, split, phase),
        )
        if phase == "test" and steer:
            path = run_dir / layout.COUNTERFACTUAL_RANKINGS
            counterfactual = pd.read_parquet(path) if path.is_file() else None
            if counterfactual is not None:  # the protocol's checks, as for any ranking
                evaluate_rankings(
                    counterfactual, split, phase, cutoffs, str(path), per_user["user_id"].tolist()
                )
            per_user, summary = with_steerability(
                per_user, summary, rankings, split, steer, counterfactual
            )
            if counterfactual is None and run.get("evaluation", {}).get("requests"):
                # a reader of requests ranked before it also ranked with counterfactual ones:
                # its lists answer the oracle request, so they say nothing of the counterfactual
                cf = [c for c in per_user.columns if c.startswith("cf_") and "request" not in c]
                per_user[[c for c in cf if c.startswith(("cf_steer_", "cf_lift_"))]] = np.nan
                summary = summary | {
                    c: float("nan") for c in cf if c.startswith(("cf_steer_", "cf_lift_"))
                }
            result["steer"] = steer_record(steer) | {
                "counterfactual_rankings": counterfactual is not None
            }
        write_parquet(run_dir / layout.per_user(phase), per_user)
        result[phase] = summary
    write_json(run_dir / layout.METRICS, result)
    return result
