"""What one GRPO step of the default grid's sid_tiger_grpo costs, by part, against an SFT step of
the same model over the same number of sequences (the reference, measured in the same run):

    .venv/bin/python benchmarks/perf/grpo_step.py --prompts 32 --group 16 --repeats 3

Parts: drawing the groups (sampled at temperature 1, and MiniOneRec's beam of G; each also as it was
before `PromptStates`, prompt and prefix read again at every position), the reference's
teacher-forced forward, the policy's forward + backward + optimiser step. The T5 has the grid's
shape and loads sid_tiger's exported policy when the grid's sid_tiger seed-0 run exists (after
`make bench`), else keeps its seeded random initialisation; the split and code table are built here
when missing. Prints seconds per step, completions per second and the ratio to the SFT step.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from llm4rec.config import load_grid
from llm4rec.data.split import read_split
from llm4rec.llm.grpo import (
    beam_groups,
    completion_log_probs,
    group_advantages,
    grpo_loss,
    hit_reward,
    sample_groups,
)
from llm4rec.llm.policy_export import POLICY_WEIGHTS, load_policy_weights
from llm4rec.llm.rl import PromptStates, continuation_log_probs
from llm4rec.llm.training import training_windows
from llm4rec.models import ResolvedInput, build_model
from llm4rec.runner import build_artifact, prepare_dataset, resolve_inputs


def timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - start) / repeats, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="benchmarks/default.yaml")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = load_grid(args.config)
    dataset = grid.datasets[0]
    if not (grid.split_dir(dataset) / "split.json").is_file():
        prepare_dataset(grid, dataset)
    split = read_split(grid.split_dir(dataset))
    source = grid.input_sources(dataset, "sid_tiger", 0)["codes"]
    if not source.marker.is_file():
        build_artifact(grid, dataset, source.name, source.config_hash)
    codes = resolve_inputs(grid, grid.run_spec(dataset, "sid_tiger", 0), split)
    rec = build_model("sid_tiger", grid.model_params("sid_tiger", dataset), 0, "cpu", inputs=codes)
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    rec.make_trainable()
    exported = grid.run_dir(dataset, "sid_tiger", 0) / "exports" / POLICY_WEIGHTS
    if exported.is_file():
        load_policy_weights(rec.model, ResolvedInput({POLICY_WEIGHTS: exported}, "sid_tiger"))
    weights = "sid_tiger's exported policy" if exported.is_file() else "random initialisation"
    model, reference = rec.model.eval(), copy.deepcopy(rec.model).eval().requires_grad_(False)
    pad = rec.tokenizer.pad_token_id
    windows = training_windows(split, rec.cfg.max_history, None, np.random.default_rng(0))
    batch = windows[: args.prompts]
    prompts = [rec.user_prompt(u, h).ids for u, h, _ in batch]
    histories = [h for _, h, _ in batch]
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)

    def teacher_forced(rows):
        """The sampler's step as it was: prompt + prefix read again at every position."""
        full = continuation_log_probs(
            model, [prompts[p] for p, _ in rows], [r for _, r in rows], pad
        )
        at = torch.tensor([len(r) for _, r in rows])
        return full[torch.arange(len(rows)), at]

    def with_states(draw):
        """Now (train_grpo): the step's prompts read once (PromptStates), timed with the draw."""

        def run():
            states = PromptStates(model, prompts, pad)
            return draw(lambda rows: states.next_log_probs(*zip(*rows, strict=True)))

        return run

    def sampled(step):
        return sample_groups(step, rec.trie, histories, args.group, 1.0, generator)

    def beams(step):
        return beam_groups(step, rec.trie, histories, args.group)

    with torch.no_grad():
        generator.manual_seed(0)
        old_sample_s, old_groups = timed(lambda: sampled(teacher_forced), args.repeats)
        old_beam_s, _ = timed(lambda: beams(teacher_forced), args.repeats)
        generator.manual_seed(0)
        sample_s, groups = timed(with_states(sampled), args.repeats)
        beam_s, _ = timed(with_states(beams), args.repeats)
    completions = [c for g in groups for c in g]
    rows = [prompts[p] for p in range(len(batch)) for _ in range(args.group)]
    tokens = [list(c.tokens) for c in completions]

    def log_probs(net):
        full = continuation_log_probs(net, rows, tokens, pad)
        parts = [
            completion_log_probs(full[g * args.group : (g + 1) * args.group], group, rec.trie, h)
            for g, (group, h) in enumerate(zip(groups, histories, strict=True))
        ]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    with torch.no_grad():
        reference_s, (ref, mask) = timed(lambda: log_probs(reference), args.repeats)
    rewards = torch.tensor(
        np.stack(
            [
                hit_reward([c.item for c in g], t, h)
                for g, (_, h, t) in zip(groups, batch, strict=True)
            ]
        ),
        dtype=torch.float32,
    )
    advantages = group_advantages(rewards).flatten()

    def update():
        new, _ = log_probs(model)
        loss, _ = grpo_loss(new, new.detach(), ref, advantages, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    update_s, _ = timed(update, args.repeats)
    loss_fn = rec.training_loss()
    examples = rec.training_examples(split, np.random.default_rng(0))[: len(completions)]

    def sft_step():
        loss, _ = loss_fn(model, examples, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    sft_s, _ = timed(sft_step, args.repeats)
    n = len(completions)
    step = sample_s + reference_s + update_s
    print(f"sid_tiger ({weights}); {args.prompts} prompts x {args.group} completions = {n}")
    print(f"{'part':34s} {'s/step':>8s} {'completions/s':>14s} {'x SFT step':>11s}")
    for name, seconds in (
        ("SFT step, same sequences (ref.)", sft_s),
        ("draw groups: sampled, before", old_sample_s),
        ("draw groups: sampled", sample_s),
        ("draw groups: beam, before", old_beam_s),
        ("draw groups: beam (MiniOneRec)", beam_s),
        ("reference forward", reference_s),
        ("policy forward+backward+step", update_s),
        ("GRPO step, sampled", step),
        ("GRPO step, beam", beam_s + reference_s + update_s),
    ):
        print(f"{name:34s} {seconds:8.3f} {n / seconds:14.0f} {seconds / sft_s:11.2f}")
    same = [[c.tokens for c in g] for g in groups] == [[c.tokens for c in g] for g in old_groups]
    print(
        f"prompts read once: sampling {old_sample_s / sample_s:.1f}x, beam "
        f"{old_beam_s / beam_s:.1f}x faster; same sampled completions as before: {same}"
    )


if __name__ == "__main__":
    main()
