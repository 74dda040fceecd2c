"""What one AlphaRec training step costs on the default grid's ml-100k, by how the InfoNCE
negatives are scored: the harness's (every cosine of the batch's users against the catalogue as one
matrix product, the sampled negatives gathered from it) against the reference measured in the same
run (the negatives' vectors gathered per pair, [batch, negatives, dim], as AlphaRec's code does):

    .venv/bin/python benchmarks/perf/alpharec_step.py --repeats 5

Both compute the same loss (checked here); the map, graph and batch are the grid's (`--hidden`,
`--batch`, `--negatives` change them). Item text embeddings are random unit vectors of the
encoder's width (the cost does not depend on their values). Prints seconds per step, the ratio, and
the peak extra memory of the loss by torch's allocator where it can tell (CPU: not measured).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from llm4rec.config import load_grid
from llm4rec.data.split import read_split
from llm4rec.models import MODELS, check_params
from llm4rec.paradigms.alpharec import (
    AlphaRecNet,
    history_means,
    info_nce,
    normalized_adjacency,
    sample_negatives,
)
from llm4rec.runner import prepare_dataset


def per_pair_info_nce(users, items, positives, negatives, tau):
    """The reference: negatives' vectors gathered per pair, then a cosine per (pair, negative)."""
    users = nn.functional.normalize(users, dim=-1)
    positive = (users * nn.functional.normalize(items[positives], dim=-1)).sum(-1) / tau
    gathered = nn.functional.normalize(items[negatives], dim=-1)
    negative = torch.einsum("bd,bnd->bn", users, gathered) / tau
    logits = torch.cat([positive[:, None], negative], dim=1)
    return (torch.logsumexp(logits, dim=1) - positive).mean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="benchmarks/default.yaml")
    parser.add_argument("--encoder-dim", type=int, default=384)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--negatives", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.config)
    dataset = grid.datasets[0]
    if not (grid.split_dir(dataset) / "split.json").is_file():
        prepare_dataset(grid, dataset)
    split = read_split(grid.split_dir(dataset))
    cfg = check_params(MODELS["alpharec"], grid.model_params("alpharec", dataset))
    hidden = args.hidden or cfg.mlp_hidden
    batch_size = args.batch or cfg.batch_size
    n_negatives = args.negatives or cfg.negatives
    cfg = type(cfg)(**{**cfg.__dict__, "mlp_hidden": hidden})

    train = split.phase("train")
    users = sorted(train["user_id"].astype(str).unique())
    items = split.items["item_id"].astype(str).tolist()
    user_idx = train["user_id"].astype(str).map({u: i for i, u in enumerate(users)}).to_numpy()
    item_idx = train["item_id"].astype(str).map({t: i for i, t in enumerate(items)}).to_numpy()
    adjacency = normalized_adjacency(len(users), len(items), user_idx, item_idx)
    z = nn.functional.normalize(
        torch.randn(len(items), args.encoder_dim, generator=torch.Generator().manual_seed(0)),
        dim=-1,
    )
    histories = [[] for _ in users]
    for u, i in zip(user_idx, item_idx, strict=True):
        histories[u].append(int(i))
    user_z = history_means(z, histories)
    seen = torch.zeros(len(users), len(items), dtype=torch.bool)
    seen[torch.as_tensor(user_idx), torch.as_tensor(item_idx)] = True
    generator = torch.Generator().manual_seed(0)
    pairs = torch.as_tensor(np.stack([user_idx, item_idx], axis=1))[:batch_size]
    negatives = sample_negatives(pairs, seen, n_negatives, generator)
    torch.manual_seed(0)
    model = AlphaRecNet(z.shape[1], cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)

    def step(loss_fn):
        def run():
            mapped_users, mapped_items = model(user_z, z, adjacency)
            loss = loss_fn(mapped_users[pairs[:, 0]], mapped_items, pairs[:, 1], negatives, cfg.tau)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss.item()

        return run

    with torch.no_grad():
        mapped_users, mapped_items = model(user_z, z, adjacency)
        ours = info_nce(mapped_users[pairs[:, 0]], mapped_items, pairs[:, 1], negatives, cfg.tau)
        reference = per_pair_info_nce(
            mapped_users[pairs[:, 0]], mapped_items, pairs[:, 1], negatives, cfg.tau
        )
    print(f"loss: catalogue matmul {ours.item():.6f}, per-pair gather {reference.item():.6f}")
    timings = {}
    for name, fn in (
        ("per-pair gather (reference)", per_pair_info_nce),
        ("catalogue matmul + gather", info_nce),
    ):
        run = step(fn)
        run()  # warm-up
        start = time.perf_counter()
        for _ in range(args.repeats):
            run()
        timings[name] = (time.perf_counter() - start) / args.repeats
    print(
        f"ml-100k: {len(users)} users, {len(items)} items; map "
        f"{args.encoder_dim}->{hidden}->{cfg.dim}, {cfg.graph_layers} graph layers, batch "
        f"{len(pairs)}, {n_negatives} negatives, {args.threads} threads"
    )
    reference_s = timings["per-pair gather (reference)"]
    for name, seconds in timings.items():
        print(f"{name:30s} {seconds:7.3f} s/step   ratio to reference {seconds / reference_s:5.2f}")


if __name__ == "__main__":
    main()
