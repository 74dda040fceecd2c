"""A constrained beam step's host side: what leaves the device and what the host does with it.

    .venv/bin/python benchmarks/perf/beam_step.py                  # the paper grid's sizes, CPU
    python benchmarks/perf/beam_step.py --device cuda              # where the copy is real

`beam_search` (llm4rec.llm.decoding) picks each live beam's continuations from the next-token
log-probabilities of every beam ([rows, vocabulary]). The reference measured here, in the same run,
is how it did that before: the whole [rows, vocabulary] tensor copied to the host every step, each
beam's children read from it in a Python loop, and the k-th best finished score found by sorting
every finished score each time it is read. Now one gather on the device takes only the live beams'
trie children, one copy moves them, and the host expands, prunes, sorts and chooses the candidates
as arrays (the trie as `ItemTrie.edges`).

The stepper is synthetic (seeded random log-probabilities of the vocabulary's size, the same for
both searches), the trie a catalogue of `--items` identifiers of `--tokens` tokens each, so the
script needs no model: it isolates the host side the model's forward does not change. It checks
that both searches return the same top-K for every user, and prints per step: bytes copied to the
host (on a GPU; on the CPU `.cpu()` copies nothing, and the count is what a GPU would move), host
milliseconds (the stepper's own time left out), and the ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llm4rec.llm.decoding import DecodeStats, beam_search  # noqa: E402
from llm4rec.llm.trie import ItemTrie  # noqa: E402


class RandomStepper:
    """Next-token log-probabilities from a fixed seeded table of 512 rows: a row's numbers are a
    function of its user, its last token and the step, as a model's would be of its prefix, so two
    searches over the same trie see the same numbers. `seconds`: its own time (not the host
    side's)."""

    def __init__(self, users: int, vocab: int, device: str, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.log_softmax(torch.randn(512, vocab, generator=generator), -1).to(device)
        self.logp, self.step_index, self.seconds = self.table[:users], 0, 0.0
        # every step's output written into one buffer (grown once): a fresh [rows, vocabulary]
        # tensor a step would be freed (gigabytes, on the CPU) in the search's time, not the
        # stepper's
        self.out = torch.empty(0, vocab, device=device)

    def step(
        self, sources: torch.Tensor, users: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        start = time.perf_counter()
        self.step_index += 1
        rows = (users * 131 + tokens + 7 * self.step_index) % len(self.table)
        if len(rows) > len(self.out):
            self.out = torch.empty(len(rows), self.table.shape[1], device=self.table.device)
        out = torch.index_select(
            self.table, 0, rows.to(self.table.device), out=self.out[: len(rows)]
        )
        if out.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - start
        return out


def reference_beam_search(stepper, trie: ItemTrie, beam_width: int, k: int, n_rows: int):
    """The search as it was: the whole tensor to the host each step, children read per beam,
    the k-th best by sorting. Returns (top-k per user, elements copied, children read: what the
    search now copies, as both searches keep the same beams)."""
    logp, copied, read = stepper.logp, 0, 0
    finished: list[list[tuple[float, str]]] = [[] for _ in range(n_rows)]
    live = [[(0.0, 0, row)] for row in range(n_rows)]

    def kth(scores):
        return (
            float("-inf")
            if len(scores) < k
            else sorted((f[0] for f in scores), reverse=True)[k - 1]
        )

    while any(live):
        sources, users, tokens, new_live = [], [], [], [[] for _ in range(n_rows)]
        logp_cpu = logp.cpu()
        copied += logp_cpu.numel()
        for user in range(n_rows):
            bound = kth(finished[user])
            candidates = []
            for score, node, row in live[user]:
                children = trie.children[node]
                toks = list(children)
                read += len(toks)
                for tok, lp in zip(toks, logp_cpu[row, toks].tolist(), strict=True):
                    if score + lp > bound:
                        candidates.append((score + lp, children[tok], row, tok))
            candidates.sort(key=lambda c: -c[0])
            for score, child, row, tok in candidates:
                if trie.is_item(child):
                    finished[user].append((score, trie.item_at[child]))
                elif len(new_live[user]) < beam_width and score > kth(finished[user]):
                    new_live[user].append((score, child, len(sources)))
                    sources.append(row)
                    users.append(user)
                    tokens.append(tok)
        live = new_live
        if not sources:
            break
        logp = stepper.step(
            torch.as_tensor(sources), torch.as_tensor(users), torch.as_tensor(tokens)
        )
    ranked = [[item for _, item in sorted(f, key=lambda f: -f[0])[:k]] for f in finished]
    return ranked, copied, read


def catalogue(items: int, tokens: int, vocab: int, seed: int = 0) -> ItemTrie:
    """`items` identifiers of `tokens` tokens (titles share first tokens, as words do), + EOS."""
    rng = np.random.default_rng(seed)
    heads = rng.integers(4, vocab, size=max(1, items // 20))  # about 20 items share a first token
    sequences, seen = {}, set()
    while len(sequences) < items:
        ids = (int(rng.choice(heads)), *(int(t) for t in rng.integers(4, vocab, size=tokens - 1)))
        if ids not in seen:
            seen.add(ids)
            sequences[str(len(sequences))] = [*ids, 3]
    return ItemTrie.build(sequences)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--users", type=int, default=64)  # the paper grid's batch_users
    parser.add_argument("--beam", type=int, default=50)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=151936)  # Qwen2.5's
    parser.add_argument("--items", type=int, default=3706)  # ML-1M's catalogue
    parser.add_argument("--tokens", type=int, default=8)  # a title's tokens
    args = parser.parse_args()
    trie = catalogue(args.items, args.tokens, args.vocab)
    mask = torch.ones(args.users, 1, dtype=torch.long, device=args.device)

    stepper = RandomStepper(args.users, args.vocab, args.device)
    start = time.perf_counter()
    reference, copied, read = reference_beam_search(stepper, trie, args.beam, args.k, args.users)
    reference_s = time.perf_counter() - start - stepper.seconds
    steps = stepper.step_index + 1

    stepper = RandomStepper(args.users, args.vocab, args.device)
    stats = DecodeStats()
    start = time.perf_counter()
    ours = beam_search(stepper, trie, args.beam, args.k, None, stats, mask)
    ours_s = time.perf_counter() - start - stepper.seconds
    same = [[item for item, _ in ranked] for ranked in ours] == reference
    print(
        f"{args.users} users x beam {args.beam}, top-{args.k}, vocabulary {args.vocab:,}, "
        f"{args.items:,} items of {args.tokens} tokens, device {args.device}, {steps} steps"
    )
    print(f"same top-{args.k} for every user: {same}")
    print(
        f"host ms/step: reference {1000 * reference_s / steps:.1f}, ours "
        f"{1000 * ours_s / steps:.1f}, ratio {reference_s / ours_s:.1f}x"
    )
    print(
        f"bytes to host/step: reference {4 * copied / steps / 2**20:.1f} MiB (the whole tensor), "
        f"ours {4 * read / steps / 2**10:.1f} KiB (the live beams' children), ratio "
        f"{copied / max(read, 1):.0f}x"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
