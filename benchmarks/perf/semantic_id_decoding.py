"""sid_tiger's ranking: our constrained beam search over the code trie (each user's history
encoded once; the shared-encoder T5 stepper, or the generic one) against Hugging Face
`generate(num_beams=W, prefix_allowed_tokens_fn=...)` on the same T5, trie and width.

    .venv/bin/python benchmarks/perf/semantic_id_decoding.py --users 32 --beam 20 --k 10

Needs the ml-100k split and the grid's `semantic_ids` artifact (built here when missing). The T5
has the grid's shape; it loads the trained weights of the grid's sid_tiger run when that run
exists (its selected checkpoint), else it keeps its seeded random initialisation. Both searches
run over the whole catalogue (no history exclusion, the same search space); the script prints
ms per user, the ratio, the top-K agreement, and the tokens each search feeds the decoder.
"""

from __future__ import annotations

import argparse
import time

import torch

from llm4rec.config import load_grid
from llm4rec.data.split import read_split
from llm4rec.llm.decoding import DecodeStats, beam_search
from llm4rec.llm.prompts import Prompt, left_pad
from llm4rec.llm.seq2seq import Seq2SeqStepper, T5SharedEncoderStepper
from llm4rec.models import build_model
from llm4rec.runner import build_artifact, resolve_inputs


def hf_reference(model, trie, prompt: torch.Tensor, beam: int, k: int) -> tuple[list[str], int]:
    """Top-k items of HF beam search restricted to the trie; also the decoder tokens it fed."""
    fed = 0

    def allowed(_batch_id: int, ids: torch.Tensor) -> list[int]:
        nonlocal fed
        fed += 1
        node = 0
        for token in ids[1:].tolist():  # after the decoder start token
            node = trie.children[node].get(token)
            if node is None or trie.is_item(node):
                return [model.config.eos_token_id]
        return list(trie.children[node])

    out = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        num_beams=beam,
        num_return_sequences=beam,
        max_new_tokens=trie.depth,
        prefix_allowed_tokens_fn=allowed,
        length_penalty=0.0,
        early_stopping=True,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    ranked = []
    for seq, _ in sorted(
        zip(out.sequences.tolist(), out.sequences_scores.tolist(), strict=True), key=lambda x: -x[1]
    ):
        node = 0
        for token in seq[1:]:
            node = trie.children[node].get(token, -1)
            if node == -1 or trie.is_item(node):
                break
        if node != -1 and trie.is_item(node) and trie.item_at[node] not in ranked:
            ranked.append(trie.item_at[node])
    return ranked[:k], fed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/default.yaml")
    parser.add_argument("--model", default="sid_tiger")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.config)
    split = read_split(grid.split_dir("ml-100k"))
    for source in grid.input_sources("ml-100k", args.model, 0).values():
        if not source.marker.is_file():
            build_artifact(grid, "ml-100k", source.name, source.config_hash)
    rec = build_model(
        args.model,
        grid.model_params(args.model, "ml-100k"),
        seed=0,
        device="cpu",
        inputs=resolve_inputs(grid, grid.run_spec("ml-100k", args.model, 0), split),
    )
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    best = grid.run_dir("ml-100k", args.model, 0) / "work" / "sft" / "best.pt"
    # the selected checkpoint's trainable weights, by parameter name (tied ones once)
    if best.is_file():
        params = dict(rec.model.named_parameters())
        with torch.no_grad():
            for name, value in torch.load(best, map_location="cpu", weights_only=True)[
                "state"
            ].items():
                params[name].copy_(value)
    weights = f"trained ({best})" if best.is_file() else "random (no finished run)"
    model, trie = rec.model.eval(), rec.trie
    history = split.history("test")
    users = sorted(history)[: args.users]
    prompts = [rec.prompt(history[u]) for u in users]
    print(
        f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"weights {weights}; {len(rec.sequences)} items, code length {trie.depth}; prompt "
        f"{sum(len(p.ids) for p in prompts) / len(prompts):.0f} tokens; beam {args.beam}, k "
        f"{args.k}, {args.threads} threads, {len(users)} users"
    )

    with torch.no_grad():
        start = time.perf_counter()
        reference = [
            hf_reference(model, trie, torch.tensor([p.ids]), args.beam, args.k) for p in prompts
        ]
        ref_time = (time.perf_counter() - start) / len(users)
        single, stats = [], DecodeStats()
        start = time.perf_counter()
        for p in prompts:
            ids = torch.tensor([p.ids])
            mask = torch.ones_like(ids)
            single.append(
                [
                    i
                    for i, _ in beam_search(
                        T5SharedEncoderStepper(model, ids, mask),
                        trie,
                        args.beam,
                        args.k,
                        None,
                        stats,
                        mask,
                    )[0]
                ]
            )
        single_time = (time.perf_counter() - start) / len(users)
        ids, mask, _ = left_pad([Prompt(p.ids) for p in prompts], 0)
        timings, batched = {}, {}
        for label, stepper in (
            ("shared encoder", T5SharedEncoderStepper),
            ("generic", Seq2SeqStepper),
        ):
            start = time.perf_counter()
            batched[label] = [
                [i for i, _ in r]
                for r in beam_search(
                    stepper(model, ids, mask), trie, args.beam, args.k, None, None, mask
                )
            ]
            timings[label] = (time.perf_counter() - start) / len(users)

    print(f"HF generate + prefix_allowed_tokens_fn: {1000 * ref_time:.1f} ms/user")
    print(
        f"ours, one user at a time:              {1000 * single_time:.1f} ms/user -> "
        f"{ref_time / single_time:.1f}x"
    )
    for label, seconds in timings.items():
        print(
            f"ours, {len(users)} users batched, {label:14s} {1000 * seconds:.1f} ms/user -> "
            f"{ref_time / seconds:.1f}x"
        )
    top = [r for r, _ in reference]
    exact = sum(r == o for r, o in zip(top, single, strict=True))
    overlap = sum(len(set(r) & set(o)) for r, o in zip(top, single, strict=True)) / (
        args.k * len(users)
    )
    same = sum(
        batched["shared encoder"][i] == batched["generic"][i] == single[i]
        for i in range(len(users))
    )
    print(
        f"top-{args.k} agreement with the reference: identical lists {exact}/{len(users)} users, "
        f"mean overlap {overlap:.1%}; batched shared = batched generic = single: "
        f"{same}/{len(users)}"
    )
    print(
        f"decoder tokens per user: ours {stats.decoded_tokens / len(users):.0f} beams fed over "
        f"{stats.steps / len(users):.1f} steps (+ {stats.prompt_tokens / len(users):.0f} encoder "
        f"tokens once); reference calls the trie {sum(f for _, f in reference) / len(users):.0f} "
        "times per user"
    )


if __name__ == "__main__":
    main()
