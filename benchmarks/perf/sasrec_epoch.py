"""What one SASRec training epoch costs, by how its examples are built: the harness's (each user's
training sequence once an epoch, a loss at every position: the SASRec paper's and SASRec+'s
training) against the reference measured in the same run (RecBole's: every prefix of every user
its own example, one loss at its last position; the same positions supervised, each prefix run
through the network again):

    .venv/bin/python benchmarks/perf/sasrec_epoch.py --steps 20
    .venv/bin/python benchmarks/perf/sasrec_epoch.py --config benchmarks/anchors.yaml \
        --dataset ml-1m --max-len 200 --block paper --batch 128

Both train the same network (`--block`, `--max-len`, `--loss`) on the grid's split of `--dataset`
with Adam; each times `--steps` optimizer steps after one warm-up step and prints seconds per step,
steps and examples per epoch, the extrapolated seconds per epoch, and their ratio.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from baselines.sasrec import SasrecConfig, position_loss, sasrec_network, sequence_batch
from llm4rec.config import load_grid
from llm4rec.data.split import read_split
from llm4rec.runner import prepare_dataset


def user_sequences(split) -> list[list[int]]:
    """Each user's training items as catalogue rows (1-based), users with two or more."""
    row = {str(item): i + 1 for i, item in enumerate(split.items["item_id"].astype(str))}
    train = split.phase("train")
    sequences = [
        [row[str(i)] for i in group.astype(str)]
        for _, group in train.groupby("user_id", sort=True)["item_id"]
    ]
    return [s for s in sequences if len(s) >= 2]


def prefixes(sequences: list[list[int]], max_len: int) -> list[tuple[list[int], int]]:
    """RecBole's examples, over each whole training sequence: (the last max_len items before
    position t, the item at t), t >= 1."""
    return [(s[max(0, t - max_len) : t], s[t]) for s in sequences for t in range(1, len(s))]


def last_position_loss(net: nn.Module, inputs, lengths, targets, loss: str) -> torch.Tensor:
    """RecBole's SASRec loss: the hidden state at each example's last item against its target."""
    hidden = net(inputs)[torch.arange(len(lengths)), lengths - 1]
    weights = net.item_embedding.weight
    if loss == "ce":
        return nn.functional.cross_entropy(hidden @ weights[1:].T, targets - 1)
    negatives = torch.randint(1, weights.shape[0], targets.shape)
    positive = (hidden * weights[targets]).sum(-1)
    negative = (hidden * weights[negatives]).sum(-1)
    return nn.functional.binary_cross_entropy_with_logits(
        positive, torch.ones_like(positive)
    ) + nn.functional.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))


def shuffled_batches(examples: list, size: int, count: int, generator) -> list[list]:
    """The first `count` batches of `size` of a seeded shuffle of `examples`."""
    order = torch.randperm(len(examples), generator=generator).tolist()
    return [
        [examples[i] for i in order[b : b + size]]
        for b in range(0, min(len(order), size * count), size)
    ]


def seconds_per_step(step, batches, steps: int) -> float:
    step(batches[0])  # warm-up
    start = time.perf_counter()
    for i in range(steps):
        step(batches[1 + i % (len(batches) - 1)] if len(batches) > 1 else batches[0])
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="benchmarks/default.yaml")
    parser.add_argument("--dataset", default=None, help="default: the grid's first dataset")
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--block", default="recbole", choices=["recbole", "paper"])
    parser.add_argument("--loss", default="ce", choices=["ce", "bce"])
    parser.add_argument("--batch", type=int, default=32, help="sequences (or prefixes) a step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.config)
    dataset = args.dataset or grid.datasets[0]
    if dataset not in grid.datasets:
        raise SystemExit(
            f"--dataset '{dataset}': not in {args.config} ({', '.join(grid.datasets)})"
        )
    prepare_dataset(grid, dataset)
    split = read_split(grid.split_dir(dataset))
    cfg = SasrecConfig(loss=args.loss, max_len=args.max_len, block=args.block)
    whole = user_sequences(split)
    examples = prefixes(whole, args.max_len)
    sequences = [s[-(args.max_len + 1) :] for s in whole]  # the harness's: the last max_len + 1
    generator = torch.Generator().manual_seed(0)
    n_items = len(split.items)

    def fresh():
        torch.manual_seed(0)
        net = sasrec_network(n_items, cfg)
        return net, torch.optim.Adam(net.parameters(), lr=1e-3)

    net, optimizer = fresh()

    def native_step(batch):
        width = max(len(s) for s in batch) - 1
        inputs = sequence_batch([s[:-1] for s in batch], width)
        targets = sequence_batch([s[1:] for s in batch], width)
        negatives = torch.randint(1, n_items + 1, targets.shape, generator=generator)
        loss = position_loss(net, inputs, targets, args.loss, negatives)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    native_batches = shuffled_batches(sequences, args.batch, args.steps + 1, generator)
    native = seconds_per_step(native_step, native_batches, args.steps)

    net, optimizer = fresh()

    def prefix_step(batch):
        lengths = torch.tensor([len(h) for h, _ in batch])
        inputs = sequence_batch([h for h, _ in batch], int(lengths.max()))
        targets = torch.tensor([t for _, t in batch])
        loss = last_position_loss(net, inputs, lengths, targets, args.loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    prefix_batches = shuffled_batches(examples, args.batch, args.steps + 1, generator)
    prefix = seconds_per_step(prefix_step, prefix_batches, args.steps)

    native_steps = -(-len(sequences) // args.batch)
    prefix_steps = -(-len(examples) // args.batch)
    print(
        f"{dataset}: {len(sequences)} users, {n_items} items; max length {args.max_len}, block "
        f"{args.block}, loss {args.loss}, {args.batch} a step, {args.threads} threads"
    )
    print(f"{'training':<32} {'examples':>10} {'steps':>8} {'s/step':>8} {'s/epoch':>10}")
    for name, n, steps, per in (
        ("harness: every position, once", len(sequences), native_steps, native),
        ("reference: RecBole's prefixes", len(examples), prefix_steps, prefix),
    ):
        print(f"{name:<32} {n:>10} {steps:>8} {per:>8.4f} {steps * per:>10.1f}")
    print(f"reference / harness, per epoch: {prefix_steps * prefix / (native_steps * native):.1f}x")


if __name__ == "__main__":
    main()
