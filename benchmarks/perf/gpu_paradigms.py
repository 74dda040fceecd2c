"""What the LLM paradigms cost on a GPU, at the paper grid's backbone shape, with no download.

    # on a GPU machine: Qwen2.5-0.5B's shape, bf16 and fp32
    python benchmarks/perf/gpu_paradigms.py
    # a dry run anywhere
    python benchmarks/perf/gpu_paradigms.py --device cpu --shape tiny --users 8 --steps 2

Every backbone is a randomly initialised Qwen2 of Qwen2.5-0.5B-Instruct's shape (896 hidden, 24
blocks, MLP 4864, 14 query / 2 key-value heads, vocabulary 151,936, tied embeddings); TIGER's T5 has
the paper's shape. The data are synthetic (1,000 users walking a 2,000-item catalogue with titles
drawn from a word list), so the script needs neither RecBole, MLflow nor a hub: only torch,
transformers and peft. For each paradigm it builds the model the grid's way (`build_model`, the
shared precision policy), then reports:
- training tokens/s over `--steps` optimiser steps of the paper grid's batch size (after one
  warm-up);
- ranking ms/user for `--users` test users at depth 50 (beam search or one forward per batch);
- peak GPU memory (torch.cuda.max_memory_allocated) of the whole measurement;
- bf16 against fp32: the same weights ranked in both, the mean overlap of the two top-10s;
- a GRPO step at the paper grid's size (sid_llm: 64 prompts x 16 beam completions; text_prompted:
  32 x 8 samples) in chunks of its micro_prompts: seconds per step and peak memory (the plan's
  GRPO assumptions);
- a constrained beam step's host side at 64 users x 50 beams over Qwen's vocabulary
  (benchmarks/perf/beam_step.py): milliseconds and bytes to the host, before and now.
Runs in about 8 minutes on one H100 (timings printed as it goes); `--paradigms` picks a subset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # beam_step, beside this script

from llm4rec.data.split import Split, leave_one_out_split  # noqa: E402
from llm4rec.llm.training import train_sft  # noqa: E402
from llm4rec.models import ResolvedInput, build_model  # noqa: E402

WORDS = (
    "red blue green old dark happy cold small river house train car sky night day love war story "
    "city return last first little big man woman girl boy king queen star world life dead lost "
    "secret game"
).split()
QWEN_05B = {
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
}
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 2048,
}
PARADIGMS = ("text_prompted", "cf_llara", "cf_e4srec", "idiomoe", "sid_llm", "sid_tiger")


def synthetic_split(users: int, items: int, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        start, stride = rng.integers(items), 1 + rng.integers(5)
        rows += [
            (f"u{u}", str((start + t * stride) % items), float(t))
            for t in range(20 + rng.integers(30))
        ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["rating"], frame["order"] = 1.0, range(len(frame))
    labelled = leave_one_out_split(frame)
    titles = [
        " ".join(rng.choice(WORDS, size=2 + rng.integers(3))).title() + f" {i}"
        for i in range(items)
    ]
    catalogue = pd.DataFrame(
        {
            "item_id": [str(i) for i in range(items)],
            "title": titles,
            "year": [str(1950 + i % 70) for i in range(items)],
            "genres": "Drama",
            "description": "",
        }
    )
    return Split(
        labelled[["user_id", "item_id", "timestamp", "seq", "phase"]].reset_index(drop=True),
        catalogue,
        {"checksums": {}},
    )


def random_backbone(shape: dict, corpus: list[str], folder: Path) -> Path:
    """A random Qwen2 of `shape` with a byte-level BPE tokenizer trained on the synthetic titles."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from llm4rec.smoke import bpe_tokenizer

    tokenizer = bpe_tokenizer(corpus, 1500)
    torch.manual_seed(0)
    config = Qwen2Config(
        **shape,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def params_for(name: str, backbone: Path, dtype: str, tiny: bool) -> dict:
    llm = {
        "backbone": {"name_or_path": str(backbone), "dtype": dtype},
        "text_retention": {"enabled": False},
        "valid_users": 8,
        "eval_every": 10_000,
        "max_train_examples": None,
        "batch_users": 64,
    }
    lora = {
        "rank": 16,
        "alpha": 32,
        "dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    }
    prompt = {
        "system": "You are a movie recommender.",
        "user": "A user watched these movies, oldest first:\n{history}\nNext?",
    }
    if name in ("text_prompted", "cf_llara"):
        extra = {"cf": {"projector": "mlp"}} if name == "cf_llara" else {}
        return (
            llm
            | extra
            | {
                "prompt": prompt,
                "lora": lora,
                "beam_width": 50,
                "max_history": 10,
                "sft": {"steps": 1, "batch_size": 16, "learning_rate": 2e-4},
            }
        )
    if name == "cf_e4srec":
        return llm | {
            "prompt": {"user": "Movies watched:{history}"},
            "max_history": 50,
            "batch_users": 128,
            "lora": lora | {"target_modules": ["gate_proj", "up_proj", "down_proj"]},
            "sft": {"steps": 1, "batch_size": 32, "learning_rate": 1e-3},
        }
    if name == "idiomoe":
        return llm | {
            "prompt": {"user": "Movies watched:{history}"},
            "max_history": 20,
            "expert_layers": "last_2" if tiny else "last_8",
            "sft": {"steps": 1, "batch_size": 32, "learning_rate": 1e-3},
        }
    if name == "sid_llm":
        return llm | {
            "prompt": {"user": "Movies watched:\n{history}"},
            "max_history": 20,
            "beam_width": 50,
            "lora": lora,
            "sft": {"steps": 1, "batch_size": 16, "learning_rate": 5e-4},
        }
    if name == "sid_tiger":
        t5 = (
            {
                "d_model": 16,
                "d_ff": 32,
                "num_heads": 2,
                "d_kv": 8,
                "encoder_layers": 1,
                "decoder_layers": 1,
            }
            if tiny
            else {
                "d_model": 128,
                "d_ff": 1024,
                "num_heads": 6,
                "d_kv": 64,
                "encoder_layers": 4,
                "decoder_layers": 4,
            }
        )
        return {
            "t5": t5,
            "max_history": 20,
            "beam_width": 50,
            "batch_users": 256,
            "valid_users": 8,
            "eval_every": 10_000,
            "sft": {"steps": 1, "batch_size": 256, "learning_rate": 1e-3},
        }
    raise ValueError(f"unknown paradigm {name} (known: {', '.join(PARADIGMS)})")


def inputs_for(name: str, folder: Path, split: Split) -> dict:
    if name.startswith("cf_"):
        path = folder / "item_embeddings.npy"
        if not path.is_file():
            np.save(
                path,
                np.random.default_rng(0).normal(size=(len(split.items), 64)).astype(np.float32),
            )
        return {"cf_source": ResolvedInput({"item_embeddings.npy": path}, "synthetic")}
    if name.startswith("sid_"):
        from llm4rec.paradigms.semantic_id.codes import SemanticIdConfig, build_semantic_ids

        codes = folder / "codes"
        if not (codes / "codes.npy").is_file():
            build_semantic_ids(
                split, SemanticIdConfig(quantizer="random", levels=3, codebook_size=256), 0, codes
            )
        return {
            "codes": ResolvedInput(
                {
                    "codes.npy": codes / "codes.npy",
                    "codebook_stats.json": codes / "codebook_stats.json",
                },
                "synthetic",
            )
        }
    return {}


def measure(
    name: str,
    split: Split,
    folder: Path,
    backbone: Path,
    device: str,
    steps: int,
    users: list[str],
    tiny: bool,
) -> dict:
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rec = build_model(
        name,
        params_for(name, backbone, "bf16", tiny),
        seed=0,
        device=device,
        inputs=inputs_for(name, folder, split),
    )
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    examples = rec.training_setup(split, np.random.default_rng(0))
    sft = dataclasses.replace(rec.cfg.sft, steps=1)
    kwargs = {"progress": False, "loss_fn": rec.training_loss(), "compute_dtype": rec.compute_dtype}
    # warm-up
    train_sft(rec.model, examples, sft, rec.tokenizer.pad_token_id, None, device, **kwargs)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = train_sft(
        rec.model,
        examples,
        dataclasses.replace(rec.cfg.sft, steps=steps),
        rec.tokenizer.pad_token_id,
        None,
        device,
        **kwargs,
    )
    if cuda:
        torch.cuda.synchronize()
    train_s = time.perf_counter() - start
    history = split.history("test")
    chosen = {u: history[u] for u in users}
    start = time.perf_counter()
    bf16 = rec._rank_batches(chosen, 50)
    if cuda:
        torch.cuda.synchronize()
    rank_s = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    rec.model.float()  # the same weights in fp32, no autocast: how far do bf16 rankings move?
    rec.compute_dtype = torch.float32
    fp32 = rec._rank_batches(chosen, 50)
    overlap = np.mean(
        [
            len(set(a.nsmallest(10, "rank").item_id) & set(b.nsmallest(10, "rank").item_id)) / 10
            for (_, a), (_, b) in zip(bf16.groupby("user_id"), fp32.groupby("user_id"), strict=True)
        ]
    )
    grpo = measure_grpo(name, rec, split, device, tiny) if name in GRPO else {}
    del rec
    if cuda:
        torch.cuda.empty_cache()
    return {
        "paradigm": name,
        "train_tokens_per_s": result.tokens / train_s,
        "s_per_step": train_s / steps,
        "rank_ms_per_user": 1000 * rank_s / len(users),
        "peak_gib": peak,
        "top10_overlap_bf16_fp32": overlap,
        "loss_finite": bool(np.isfinite(result.losses).all()),
        **grpo,
    }


# the paper grid's GRPO stages on these parents: (prompts per step, group, sampler, micro_prompts)
GRPO = {"sid_llm": (64, 16, "beam", 4), "text_prompted": (32, 8, "sample", 8)}


def measure_grpo(name: str, rec, split: Split, device: str, tiny: bool) -> dict:
    """Two GRPO steps (after one warm-up) at the paper grid's step size on `rec`'s model (the
    policy) and a frozen copy (the reference), in chunks of micro_prompts: seconds per step and
    the peak GPU memory of a step (the plan's GRPO memory assumption)."""
    import copy

    from llm4rec.llm.rl import GrpoConfig, train_grpo
    from llm4rec.llm.training import training_windows

    prompts, group, sampler, micro = GRPO[name]
    if tiny:
        prompts, group, micro = 4, 4, 2
    cfg = GrpoConfig(
        steps=1, prompts_per_step=prompts, group_size=group, sampler=sampler,
        constrained=sampler == "beam", micro_prompts=micro, rewards={"hit": 1.0},
        eval_every=10**9, checkpoint_every=10**9,
    )  # fmt: skip
    windows = training_windows(split, rec.cfg.max_history, None, np.random.default_rng(0))
    reference = copy.deepcopy(rec.model).requires_grad_(False).eval()

    def step(n: int) -> float:
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        train_grpo(
            rec.model, reference, lambda user, history: rec.user_prompt(user, history).ids,
            windows, rec.trie, dataclasses.replace(cfg, steps=n), 0,
            rec.tokenizer.pad_token_id, None, None, None, rec.compute_dtype, progress=False,
        )  # fmt: skip
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(1)  # warm-up
    seconds = step(2) / 2
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return {
        "grpo_rows_per_step": prompts * group,
        "grpo_micro_prompts": micro,
        "grpo_s_per_step": seconds,
        "grpo_peak_gib": peak,
    }


def measure_beam_step(device: str, tiny: bool) -> dict:
    """benchmarks/perf/beam_step.py at the paper grid's sizes on `device`: the host side of a
    constrained beam step, the previous search (the whole vocabulary to the host) against ours."""
    from beam_step import RandomStepper, catalogue, reference_beam_search

    from llm4rec.llm.decoding import DecodeStats, beam_search

    users, beam, vocab, items = (8, 10, 2048, 300) if tiny else (64, 50, 151936, 3706)
    trie = catalogue(items, 8, vocab)
    mask = torch.ones(users, 1, dtype=torch.long, device=device)
    stepper = RandomStepper(users, vocab, device)
    start = time.perf_counter()
    reference, copied, read = reference_beam_search(stepper, trie, beam, beam, users)
    reference_s, steps = time.perf_counter() - start - stepper.seconds, stepper.step_index + 1
    stepper = RandomStepper(users, vocab, device)
    start = time.perf_counter()
    ours = beam_search(stepper, trie, beam, beam, None, DecodeStats(), mask)
    ours_s = time.perf_counter() - start - stepper.seconds
    return {
        "beam_same_top_k": [[i for i, _ in r] for r in ours] == reference,
        "beam_host_ms_per_step_before": 1000 * reference_s / steps,
        "beam_host_ms_per_step": 1000 * ours_s / steps,
        "beam_mib_to_host_per_step_before": 4 * copied / steps / 2**20,
        "beam_kib_to_host_per_step": 4 * read / steps / 2**10,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=("qwen2.5-0.5b", "tiny"), default="qwen2.5-0.5b")
    parser.add_argument("--paradigms", nargs="+", default=list(PARADIGMS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--users", type=int, default=128)
    parser.add_argument("--out", help="also write the rows as JSON here")
    parser.add_argument("--beam-out", help="also write the beam step's figures as JSON here")
    args = parser.parse_args()
    tiny = args.shape == "tiny"
    split = synthetic_split(200 if tiny else 1000, 300 if tiny else 2000)
    users = sorted(split.targets("test"))[: args.users]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        corpus = list(split.items["title"]) + [
            "You are a movie recommender. A user watched these movies, oldest first: Next?"
        ]
        backbone = random_backbone(TINY if tiny else QWEN_05B, corpus, folder / "backbone")
        print(
            f"device {args.device} "
            f"({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}), "
            f"shape {args.shape}, {args.steps} steps, {len(users)} users at depth 50",
            flush=True,
        )
        for name in args.paradigms:
            start = time.perf_counter()
            row = measure(name, split, folder, backbone, args.device, args.steps, users, tiny)
            rows.append(row)
            print(json.dumps(row | {"wall_s": round(time.perf_counter() - start, 1)}), flush=True)
    print(
        f"\n{'paradigm':<14}{'train tok/s':>12}{'s/step':>8}{'rank ms/user':>13}"
        f"{'peak GiB':>9}{'top-10 bf16~fp32':>17}"
    )
    for r in rows:
        print(
            f"{r['paradigm']:<14}{r['train_tokens_per_s']:>12.0f}{r['s_per_step']:>8.3f}"
            f"{r['rank_ms_per_user']:>13.2f}"
            f"{r['peak_gib']:>9.2f}{r['top10_overlap_bf16_fp32']:>17.2f}"
        )
    for r in rows:
        if "grpo_s_per_step" in r:
            print(
                f"GRPO on {r['paradigm']}: {r['grpo_rows_per_step']} rows a step, "
                f"micro_prompts {r['grpo_micro_prompts']}: {r['grpo_s_per_step']:.2f} s/step, "
                f"peak {r['grpo_peak_gib']:.2f} GiB"
            )
    beam = measure_beam_step(args.device, tiny)
    print(json.dumps(beam))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    if args.beam_out:
        Path(args.beam_out).write_text(json.dumps(beam, indent=1))
    return 0 if all(r["loss_finite"] for r in rows) and beam["beam_same_top_k"] else 1


if __name__ == "__main__":
    sys.exit(main())
