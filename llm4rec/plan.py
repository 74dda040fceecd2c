"""`llm4rec plan GRID`: what every cell of a grid will cost, before anyone submits it.

An estimate from the config and the dataset sizes, never from running the model:
- tokens: each paradigm's example length (history items x tokens per item, from the prepared
  catalogue's titles) x optimiser steps x batch; the output layer over the catalogue where a model
  has one; validation rankings during training; the test ranking (a prefill per user, then
  beam x identifier-length decoding steps, or one forward per user);
- FLOPs: 2 per parameter per token forward, 2 more backward through the activations, 2 more for
  the parameters that train (so LoRA costs ~4N a token, full fine-tuning ~6N);
- time under a stated device profile: training and prefill at an effective FLOP rate; a decoding
  step reads every weight once, so it costs at least weights / bandwidth; plus a fixed per-job
  overhead (start, loading, text retention);
- peak memory: weights, fp32 master weights + gradients + Adam moments for what trains (16 bytes a
  parameter), activations and logits of one micro-batch;
- the SLURM resources the grid will request (its `resources`: gpu, mem_mb, runtime).

Profiles: `h100` (the paper grid's machine; throughput stated below) and `cpu2` (this project's
2-core CPU, calibrated on the default grid's measured runs: tests/test_plan.py checks the plan
against them, within 2x per run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from llm4rec.config import Grid
from llm4rec.estimates import (
    SENTENCE_ENCODER_PARAMS,
    TEXT_TOKENS,
    Cell,
    Estimate,
    backbone_shape,
)
from llm4rec.models import ARTIFACTS, MODELS, check_params, row_function

# a suggested runtime is this many times the estimate (rounded up to 15 min), at least 30 / 60 min
SAFETY = 4


@dataclass(frozen=True)
class Profile:
    name: str
    train_flops: float  # effective FLOP/s of training steps
    forward_flops: (
        float  # effective FLOP/s of batched forward passes (prefill, one-forward scoring)
    )
    bandwidth: float  # bytes/s: a decoding step reads every weight once
    small_flops: (
        float  # effective FLOP/s of the baselines' small matrices (RecBole's embeddings of 64-128)
    )
    startup_s: float  # per job: interpreter and imports (outside the run's own clock)
    # per LLM run: loading the backbone and the text-retention perplexity before and after
    load_s: float
    weight_bytes: int  # bytes per backbone weight (bf16 on the GPU, fp32 on CPU)
    layer_latency_s: float = (
        0.0  # the least time one block's forward takes, however small the batch (kernel launches)
    )
    # the beam search's host side (choosing each step's beams in Python), per live beam and step:
    # synchronous, so it adds to the device's time (benchmarks/perf/beam_step.py measures it)
    host_s_per_beam: float = 0.0


PROFILES = {
    # H100 SXM: 989 TFLOP/s dense bf16 peak, 3.35 TB/s HBM3. Assumed, until
    # benchmarks/perf/gpu_paradigms.py measures them (docs/gpu.md lists what it must confirm):
    # - training at 10% of peak (100 TFLOP/s): a 0.5B model on sequences of 50-200 tokens with LoRA
    #   (small matmuls, the optimiser, Python between micro-batches) stays far from peak;
    # - batched forward passes at 15% (150 TFLOP/s), decoding at 75% of bandwidth;
    # - small matrices (the baselines): 1 TFLOP/s;
    # - 30 s to start a job, 60 s to load a backbone and measure text retention;
    # - eager PyTorch launches ~10 kernels per block at ~20 us each: a block's forward takes at
    #   least 0.2 ms;
    # - the beam search's host side, measured (benchmarks/perf/beam_step.py, 64 users x 50 beams
    #   over Qwen's vocabulary, 2-core Xeon: 9.8 ms a step, vectorised): 3e-6 s per live beam and
    #   step, on a GPU node's CPU as here
    "h100": Profile("H100 SXM (bf16)", 100e12, 150e12, 2.5e12, 1e12, 30.0, 60.0, 2, 0.2e-3, 3e-6),
    # 2 cores (AMD EPYC, AVX-512), fp32, 2 threads; calibrated on the default grid
    # (tests/test_plan.py)
    "cpu2": Profile("2-core CPU (fp32)", 150e9, 150e9, 12e9, 3e9, 10.0, 40.0, 4),
}


def cell_cost(
    grid: Grid,
    dataset: str,
    model: str,
    stats: dict[str, float],
    config: Any = None,
    users_of: str | None = None,
) -> Estimate:
    """The estimated cost of one run (one seed) of `model` on `dataset`: its row's
    `estimate_cost(config, cell)` (`config`: other params than the grid's; `users_of`: the entry
    whose evaluation samples it ranks)."""
    spec = MODELS[model]
    if config is None:
        config = check_params(spec, grid.model_params(model, dataset))
    estimate = row_function(spec, "estimate_cost")
    if estimate is None:
        raise ValueError(
            f"plan: {model}'s module ({spec.factory.split(':')[0]}) exports no "
            "estimate_cost(config, cell) (docs/adding-a-model.md)"
        )
    evaluation = grid.model_evaluation(users_of or model)
    cell = Cell(
        model,
        stats,
        min(evaluation.get("valid_users") or stats["users"], stats["users"]),
        min(evaluation.get("test_users") or stats["users"], stats["users"]),
        grid.model_inputs(model),
        estimate=lambda m, c, u: cell_cost(grid, dataset, m, stats, c, u),
        params_of=lambda m: check_params(MODELS[m], grid.model_params(m, dataset)),
        inputs_of=grid.model_inputs,
        artifact_params=lambda name, params: check_params(ARTIFACTS[name], params),
    )
    return estimate(config, cell)


def artifact_cost(name: str, params: Any, stats: dict[str, float]) -> Estimate:
    """One artifact job: llm_states, the frozen LLM's forward over each user's last `window`
    titles; item_text_embeddings (and semantic_ids' encoder), one forward per item text through the
    encoder (a backbone, or the sentence encoder); semantic_ids' quantizer and item_text_lsa are
    small matrices over the catalogue (counted as their encoding)."""
    users, items = stats["users"], stats["items"]
    if name == "llm_states":
        shape = backbone_shape(params.backbone.name_or_path)
        tokens = users * (12 + params.window * stats["title_tokens"])
        return Estimate(forward_flops=2 * shape.params * tokens, weights=shape.params)
    if name in ("item_text_embeddings", "semantic_ids"):
        encoder = params if name == "item_text_embeddings" else params.encoder
        if encoder.kind == "backbone":
            n = backbone_shape(encoder.model).params
            return Estimate(forward_flops=2 * n * items * TEXT_TOKENS, weights=n)
        flops = 2 * SENTENCE_ENCODER_PARAMS * items * TEXT_TOKENS
        return Estimate(forward_flops=flops, weights=SENTENCE_ENCODER_PARAMS)
    return Estimate(forward_flops=items * 1e6, small=True)  # item_text_lsa: an SVD of the catalogue


def training_flops(grid: Grid, cells: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """(dataset, model) -> the cost model's training FLOPs of one run (the report's learning-curve
    figure), for the cells of the grid whose split is prepared; a cell the model cannot cost is
    left out."""
    from llm4rec.data.split import read_split

    out, stats_of = {}, {}
    for dataset, model in cells:
        if model not in grid.models or not (grid.split_dir(dataset) / "split.json").is_file():
            continue
        if dataset not in stats_of:
            stats_of[dataset] = dataset_stats(grid, dataset, read_split(grid.split_dir(dataset)))
        try:
            out[(dataset, model)] = cell_cost(grid, dataset, model, stats_of[dataset]).train_flops
        except (KeyError, ValueError):
            continue
    return out


def dataset_stats(grid: Grid, dataset: str, split=None) -> dict[str, float]:
    """Sizes the plan needs, from the prepared split (prepared here when it is not yet)."""
    from llm4rec.runner import prepare_dataset

    split = split or prepare_dataset(grid, dataset)
    stats = split.meta["stats"]
    titles = split.items["title"].astype(str) + (
        " (" + split.items["year"].astype(str) + ")" if "year" in split.items else ""
    )
    # ~1.6 tokens a word, plus the year
    return {
        "users": stats["users"],
        "items": stats["items"],
        "train_interactions": stats["train_interactions"],
        "title_tokens": float(titles.str.split().str.len().mean() * 1.6 + 2),
    }


def plan(grid: Grid, profile: str = "h100") -> pd.DataFrame:
    """One row per (dataset, model): estimated minutes, tokens, peak memory per run, the run count,
    GPU-hours, and the resources the grid requests."""
    chosen = PROFILES[profile]
    rows = []
    sources = grid.source_runs()  # a `role: source` dataset runs only what is transferred from it
    cells = [
        (d, m, len(grid.model_seeds(m)))
        for d in grid.evaluated_datasets
        for m in grid.models
        if d in grid.model_datasets(m)
    ]
    for dataset, model in sorted({(d, m) for d, m, _ in sources}):
        cells.append((dataset, model, sum(1 for d, m, _ in sources if (d, m) == (dataset, model))))
    stats_of: dict[str, dict[str, float]] = {}
    for dataset, model, runs in cells:
        if dataset not in stats_of:
            stats_of[dataset] = dataset_stats(grid, dataset)
        stats = stats_of[dataset]
        cost = cell_cost(grid, dataset, model, stats)
        seconds = cost.seconds(chosen)
        resources = grid.model_entry(model).get("resources", {})
        # an LLM job's first run may download its backbone
        floor = 30 if MODELS[model].paradigm == "baseline" else 60
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "paradigm": MODELS[model].paradigm,
                "runs": runs,
                "train_tokens_M": cost.train_tokens / 1e6,
                "train_PFLOP": cost.train_flops / 1e15,
                "rank_PFLOP": cost.forward_flops / 1e15,
                "minutes_per_run": seconds / 60,
                "epochs": cost.epochs,
                "peak_GiB": cost.peak_gb(chosen),
                "device_hours": runs * seconds / 3600,
                "gpu": resources.get("gpu", 0),
                "mem_mb": resources.get("mem_mb", 4000),
                "runtime_min": resources.get("runtime", 120),
                "runtime_suggested_min": max(floor, math.ceil(SAFETY * seconds / 60 / 15) * 15),
            }
        )
    for (dataset, name, key), source in sorted(grid.artifacts().items()):
        if dataset not in stats_of:
            stats_of[dataset] = dataset_stats(grid, dataset)
        cost = artifact_cost(name, check_params(ARTIFACTS[name], source.params), stats_of[dataset])
        seconds = cost.seconds(chosen)
        resources = grid.artifact_resources(dataset, name, key)
        rows.append(
            {
                "dataset": dataset,
                "model": f"artifact {name} ({key[:8]})",
                "paradigm": "artifact",
                "runs": 1,
                "train_tokens_M": 0.0,
                "train_PFLOP": 0.0,
                "rank_PFLOP": cost.forward_flops / 1e15,
                "minutes_per_run": seconds / 60,
                "epochs": 0.0,
                "peak_GiB": cost.peak_gb(chosen),
                "device_hours": seconds / 3600,
                "gpu": resources["gpu"],
                "mem_mb": resources["mem_mb"],
                "runtime_min": resources["runtime"],
                "runtime_suggested_min": max(30, math.ceil(SAFETY * seconds / 60 / 15) * 15),
            }
        )
    return pd.DataFrame(rows)


def render_plan(frame: pd.DataFrame, profile: str) -> str:
    chosen = PROFILES[profile]
    lines = [
        "| dataset | model | runs | train tokens | epochs | min / run | peak GiB | device-h | "
        "requests (gpu, mem, runtime) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in frame.itertuples():
        short = (
            f" (!: suggested {r.runtime_suggested_min})"
            if r.runtime_min < r.runtime_suggested_min
            else ""
        )
        epochs = f"{r.epochs:.2f}" if r.epochs else "–"
        lines.append(
            f"| {r.dataset} | {r.model} | {r.runs} | {r.train_tokens_M:.1f}M | {epochs} | "
            f"{r.minutes_per_run:.1f} | {r.peak_GiB:.1f} | {r.device_hours:.2f} | {r.gpu}, "
            f"{r.mem_mb} MB, {r.runtime_min} min{short} |"
        )
    total = frame["device_hours"].sum()
    gpu = frame.loc[frame["gpu"] > 0, "device_hours"].sum()
    lines += [
        "",
        f"Total: {total:.1f} device-hours on {chosen.name} ({gpu:.1f} of them in jobs that "
        f"request a GPU), {int(frame['runs'].sum())} runs. Assumed: {chosen.train_flops / 1e12:g} "
        f"TFLOP/s in training, {chosen.forward_flops / 1e12:g} TFLOP/s in forward passes, "
        f"{chosen.bandwidth / 1e12:g} TB/s of weight reads per decoding step, "
        f"{chosen.small_flops / 1e12:g} TFLOP/s for the baselines' small matrices; "
        f"{chosen.startup_s:.0f} s to start a job, {chosen.load_s:.0f} s to load a backbone and "
        f"measure text retention; {chosen.host_s_per_beam * 1e6:g} us of host time per live beam "
        "and decoding step (the beam search's Python side, measured by "
        "benchmarks/perf/beam_step.py). Artifacts are rows of their own (`artifact NAME (key)`), "
        "built once for the runs that read them. Not counted: evaluation and tracking jobs "
        "(seconds each). (!): the requested runtime is under the suggested one "
        f"({SAFETY}x the estimate, at least 30 min, 60 for an LLM run).",
    ]
    return "\n".join(lines) + "\n"


def describe(profile: str) -> dict[str, Any]:
    p = PROFILES[profile]
    return {
        "profile": p.name,
        "train_flops": p.train_flops,
        "forward_flops": p.forward_flops,
        "bandwidth": p.bandwidth,
    }
