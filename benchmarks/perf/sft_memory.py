"""SFT's memory and time: the LM head at labelled positions only, and training examples as arrays.

    .venv/bin/python benchmarks/perf/sft_memory.py            # SmolLM2-135M's shape, CPU
    python benchmarks/perf/sft_memory.py --device cuda --vocab 151936 --hidden 896 --layers 24

Two measurements, each against the previous way measured in the same run:

1. One SFT micro-batch (forward and backward) of a random-weight Llama of the given shape on
   next-item windows (`--length` tokens, the last `--labelled` of them the target's). The reference
   is the backbone's own loss, which computes and upcasts [batch, length, vocabulary] logits; now
   `labelled_token_loss` applies the head at the labelled positions only. Prints ms per micro-batch,
   the logits' bytes each computes (counted), the peak device memory on a GPU, and the losses
   (equal up to summation order).
2. `--windows` training examples as the text rows build them (token ids from Qwen's vocabulary
   range): Python lists of ints (before) against int32 arrays (`encode_example` now), and the
   examples' hash for the checkpoint fingerprint: `stable_hash` (one JSON blob of all of them)
   against `sequence_hash` (one example at a time). Prints the bytes held (tracemalloc, which sees
   numpy's buffers too), the hash's peak bytes and seconds, and the ratios; `--scale` extrapolates
   both to ml-1m's 980,000 windows.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from llm4rec.io import sequence_hash, stable_hash  # noqa: E402
from llm4rec.llm.training import encode_example, labelled_token_loss  # noqa: E402


def sft_micro_batch(args) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 8 // 3,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 192),
        max_position_embeddings=2048,
    )
    model = LlamaForCausalLM(config).to(args.device).train()
    ids = torch.randint(0, args.vocab, (args.batch, args.length), device=args.device)
    labels = torch.full_like(ids, -100)
    labels[:, -args.labelled :] = ids[:, -args.labelled :]
    mask = torch.ones_like(ids)

    def reference():
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss

    def labelled():
        return labelled_token_loss(model, labels, input_ids=ids, attention_mask=mask)

    rows = {}
    for name, fn in [("full head (before)", reference), ("labelled positions", labelled)]:
        fn().backward()  # warm-up
        model.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(args.repeats):
            loss = fn()
            loss.backward()
            model.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / args.repeats * 1e3
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else float("nan")
        positions = (
            args.batch * args.length
            if name.startswith("full")
            else args.batch * (args.labelled - 1)
        )
        rows[name] = (ms, positions * args.vocab * 4, peak, loss.item())
    print(
        f"SFT micro-batch: {args.batch} x {args.length} tokens ({args.labelled} labelled), "
        f"vocabulary {args.vocab:,}, hidden {args.hidden}, {args.layers} layers, {args.device}"
    )
    for name, (ms, logit_bytes, peak, loss) in rows.items():
        print(
            f"  {name:20s} {ms:9.1f} ms  fp32 logits {logit_bytes / 2**20:9.1f} MiB  "
            f"peak {peak:6.2f} GiB  loss {loss:.6f}"
        )
    (ms0, b0, _, _), (ms1, b1, _, _) = rows.values()
    print(f"  ratio (before / now): time {ms0 / ms1:.2f}x, logits {b0 / b1:.1f}x")


def examples_memory(args) -> None:
    def windows():
        # fresh Python ints per window, as a tokenizer returns them
        rng = np.random.default_rng(0)
        for _ in range(args.windows):
            yield (
                rng.integers(300, 151_936, args.length - 10).tolist(),
                rng.integers(300, 151_936, 10).tolist(),
            )

    def as_lists():
        return [(p + t, [-100] * len(p) + t) for p, t in windows()]

    def as_arrays():
        return [encode_example(p, t) for p, t in windows()]

    print(
        f"\ntraining examples: {args.windows:,} windows of {args.length} tokens (x{args.scale:g})"
    )
    results = {}
    for name, build, digest in [
        ("lists + stable_hash (before)", as_lists, stable_hash),
        ("int32 + sequence_hash", as_arrays, sequence_hash),
    ]:
        tracemalloc.start()
        examples = build()
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        digest(examples)
        transient = tracemalloc.get_traced_memory()[1] - held
        tracemalloc.stop()
        start = time.perf_counter()  # timed apart: tracing slows every allocation
        digest(examples)
        seconds = time.perf_counter() - start
        del examples
        results[name] = (held, transient, seconds)
        print(
            f"  {name:30s} held {held / 2**20:8.1f} MiB "
            f"({held * args.scale / 2**30:5.1f} GiB scaled)  hash peak {transient / 2**20:8.1f} "
            f"MiB ({transient * args.scale / 2**30:5.1f} GiB scaled)  {seconds:5.2f} s"
        )
    (h0, t0, s0), (h1, t1, s1) = results.values()
    print(
        f"  ratio (before / now): held {h0 / h1:.1f}x, hash peak {t0 / max(t1, 1):.0f}x, "
        f"hash time {s0 / s1:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--vocab", type=int, default=49_152)
    parser.add_argument("--hidden", type=int, default=576)
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=190)
    parser.add_argument("--labelled", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--windows", type=int, default=20_000)
    parser.add_argument("--skip-model", action="store_true", help="the examples' part only")
    args = parser.parse_args()
    args.scale = 980_000 / args.windows
    if not args.skip_model:
        sft_micro_batch(args)
    examples_memory(args)


if __name__ == "__main__":
    main()
