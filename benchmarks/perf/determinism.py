"""What deterministic algorithms buy and cost: the backward of an item-embedding gather
(`items[ids]`, IDIOMoE's item tokens at its CPU shape: 1,349 items x 576 dims, 32 windows of 20
item tokens), repeated on 2 threads while another process keeps one core busy (as a rerun next to
other work does), with and without `torch.use_deterministic_algorithms(True)`.

    .venv/bin/python benchmarks/perf/determinism.py --repeats 50

Prints, for each setting, how many distinct gradients the identical backward passes gave and the
time per pass, as a ratio against the default (nondeterministic) setting measured in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import time

import torch


def busy(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def backward_passes(
    deterministic: bool, repeats: int, items: int, dim: int, tokens: int
) -> tuple[int, float]:
    torch.use_deterministic_algorithms(deterministic)
    g = torch.Generator().manual_seed(0)
    table = torch.randn(items, dim, generator=g, requires_grad=True)
    ids = torch.randint(0, items, (tokens,), generator=g)
    upstream = torch.randn(tokens, dim, generator=g)
    digests, start = set(), time.perf_counter()
    for _ in range(repeats):
        table.grad = None
        (table[ids] * upstream).sum().backward()
        digests.add(hashlib.sha256(table.grad.numpy().tobytes()).hexdigest())
    return len(digests), (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stop = multiprocessing.Event()
    load = multiprocessing.Process(target=busy, args=(stop,), daemon=True)
    load.start()
    try:
        shape = {"items": 1349, "dim": 576, "tokens": 32 * 20}
        results = {
            name: backward_passes(flag, args.repeats, **shape)
            for name, flag in (("default", False), ("deterministic", True))
        }
    finally:
        stop.set()
        load.join()
    reference = results["default"][1]
    print(
        f"{args.repeats} identical backward passes of items[ids] ({shape}), {args.threads} "
        "threads, one core busy"
    )
    print(f"{'setting':15s} {'distinct gradients':>19s} {'ms/pass':>9s} {'vs default':>11s}")
    for name, (distinct, seconds) in results.items():
        print(f"{name:15s} {distinct:19d} {1000 * seconds:9.2f} {seconds / reference:10.2f}x")


if __name__ == "__main__":
    main()
