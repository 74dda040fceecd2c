"""The GRPO stage (`*_grpo` rows; issue 27): a run that starts from another run's fine-tuned
generative recommender and trains it further on recommendation rewards (Rec-R1, MiniOneRec,
STARec).

Inputs: `policy`, the parent run's exported weights and record (`llm4rec.llm.policy_export`),
and whatever the parent consumed (sid_tiger: its `codes`), checked file by file to be the parent's.
Fit: rebuild the parent's recommender (same class and config), load and prepare its backbone,
load the exported weights into it, freeze a copy as the reference policy, and run GRPO
(`llm4rec.llm.rl`) on the parent's training windows; validation NDCG@10 on the same user sample
the parent used is measured before the first step (the SFT policy's score) and every `eval_every`
steps, and selects the checkpoint among the RL steps. Ranking is the parent's own (its
catalogue-constrained beam search) on the selected weights.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, grpo_pass_bytes, rank_users, train_sequences
from llm4rec.evaluation.evaluate import sample_users, selection_score
from llm4rec.evaluation.metrics import metric_cutoff
from llm4rec.io import sha256_file, stable_hash
from llm4rec.llm import precision
from llm4rec.llm.policy_export import PolicyStage, restore_policy
from llm4rec.llm.rl import GrpoConfig, train_grpo
from llm4rec.llm.selection import CheckpointSelection
from llm4rec.llm.training import training_windows
from llm4rec.models import BuildSpec


class GrpoRecommender(PolicyStage):
    """The parent's recommender, trained on by GRPO (module doc)."""

    cfg: GrpoConfig

    def fit(self, split: Split, workdir: Path) -> dict:
        parent, cfg = self.parent, self.cfg
        info, tensors = restore_policy(parent, split, self.policy)
        reference = copy.deepcopy(parent.model).requires_grad_(False).eval()
        windows = training_windows(
            split, parent.cfg.max_history, cfg.max_prompts, np.random.default_rng(self.seed)
        )
        sample = sample_users(list(split.targets("valid")), cfg.valid_users, seed=0)
        fingerprint = stable_hash(
            {
                # all but the step budget: a longer run continues a shorter one's checkpoint
                "params": dataclasses.asdict(dataclasses.replace(cfg, steps=0, checkpoint_every=0)),
                "seed": self.seed,
                "windows": stable_hash(windows),
                "valid_sample": sample,
                "selection": self.selection_metric,
                "policy": sha256_file(self.policy.paths["policy.pt"]),
                "inputs": parent._input_checksums(),
            }
        )
        selection = CheckpointSelection(
            Path(workdir) / "grpo" / "best.pt",
            fingerprint,
            split,
            sample,
            self.selection_metric,
            cfg.eval_every,
            cfg.steps,
        )
        start = time.perf_counter()
        # the SFT policy's validation score on the same sample: the curve's step 0
        start_rankings = parent._rank_batches(selection.histories, metric_cutoff(selection.metric))
        start_score = selection_score(start_rankings, split, selection.metric, sample)
        select = selection.on_step(parent.model, parent._rank_batches)

        def on_step(step: int, reward: float) -> float | None:
            select(step, reward)
            last = selection.curve[-1] if selection.curve else None
            return last[1] if last and last[0] == step else None

        result = train_grpo(
            parent.model,
            reference,
            lambda user, history: parent.user_prompt(user, history).ids,
            windows,
            parent.trie,
            cfg,
            self.seed,
            parent.tokenizer.pad_token_id,
            Path(workdir) / "grpo",
            fingerprint,
            on_step,
            parent.compute_dtype,
        )
        del reference
        parent.selection, parent._reuse_selection = selection, selection.restore(parent.model)
        info |= {
            "policy": {
                "source": self.policy.source,
                "tensors": tensors,
                "parent_selected_step": self.record["selected_step"],
                "parent_valid_score": self.record["valid_score"],
            },
            "grpo_prompts": len(windows),
            "grpo_steps_run": result.steps_run,
            "grpo_sampled_tokens": result.tokens,
            "grpo_log": result.log,
            f"valid_{selection.metric}_at_start": start_score,
            **selection.as_dict(),
            "grpo_seconds": time.perf_counter() - start,
            "train_tokens": result.tokens,
            "precision": precision.record(parent.model, parent.compute_dtype),
            "decoding_during_fit": parent.inference_cost(),
            "backbone": parent.loaded_backbone,
            "parameters_total": sum(p.numel() for p in parent.model.parameters()),
            "parameters_trainable": sum(
                p.numel() for p in parent.model.parameters() if p.requires_grad
            ),
        }
        parent.model.eval()
        return info


def build(spec: BuildSpec) -> GrpoRecommender:
    return GrpoRecommender(spec)


def train_budget(hp: dict[str, Any]) -> str:
    """MLflow's budget.train: the RL stage's own steps (its parent's SFT is the parent run's)."""
    return f"{hp['steps']} RL steps x {hp['prompts_per_step']} prompts x {hp['group_size']}"


def estimate_cost(config: GrpoConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: an RL stage over its parent's model (its shape, prompt and identifier
    length, from the parent's own estimate). Per step, prompts x group completions sampled (or
    beam-searched) position by position, each prompt read once (`PromptStates`: its KV cache or
    encoder output) and each position feeding a row its prefix so far, then teacher-forced
    through the reference (forward) and the policy (forward and backward, per update);
    validation rankings at the start and every `eval_every` steps, and the test ranking with the
    parent's beam."""
    parent = cell.policy_parent()
    pcfg = cell.params_of(parent)
    sft = cell.estimate(parent, None, None)
    examples = max(1, pcfg.sft.steps * pcfg.sft.batch_size * pcfg.sft.grad_accum)
    ident = sft.identifier
    prompt = max(1.0, sft.train_tokens / examples - ident)
    layers, hidden, vocab = sft.layers, sft.hidden, sft.vocab
    n, estimate = sft.weights, Estimate()
    estimate.weights, estimate.trainable = n, sft.trainable
    rows = config.steps * config.prompts_per_step * config.group_size
    positions = int(math.ceil(ident))
    micro_rows = (config.micro_prompts or config.prompts_per_step) * config.group_size
    estimate.activation_bytes = grpo_pass_bytes(
        micro_rows, prompt + ident, positions + 1, hidden, layers, vocab,
        config.gradient_checkpointing,
    )  # fmt: skip
    estimate.forward_flops += config.steps * config.prompts_per_step * 2 * n * prompt
    estimate.forward_flops += rows * sum(2 * n * j for j in range(positions))
    estimate.layer_passes += config.steps * positions * layers
    estimate.beam_slots += rows * positions  # the sampler's host side: every row, every position
    estimate.forward_flops += rows * 2 * n * (prompt + ident)  # the reference
    updates = config.steps * config.updates_per_batch
    train_sequences(
        estimate,
        n,
        sft.trainable,
        prompt + ident,
        rows * config.updates_per_batch,
        micro_batches=updates,
        layers=layers,
    )
    evaluations = config.steps // max(config.eval_every, 1) + 1  # + the parent's, at step 0
    for users in (config.valid_users * evaluations, cell.test_users + cell.valid_users):
        rank_users(
            estimate, n, users, prompt, pcfg.batch_users, pcfg.beam_width, positions, layers=layers
        )
    return estimate


def toy_params(params: dict[str, Any], steps: int) -> dict[str, Any]:
    """`llm4rec smoke`: `steps` RL steps of a few prompts and small groups."""
    return params | {
        "steps": steps,
        "checkpoint_every": steps,
        "prompts_per_step": 4,
        "group_size": min(params.get("group_size", 4), 4),
        "max_prompts": 64,
    }
