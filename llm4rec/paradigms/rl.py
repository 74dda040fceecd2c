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
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from llm4rec.data.split import Split
from llm4rec.evaluation.evaluate import sample_users, selection_score
from llm4rec.evaluation.metrics import metric_cutoff
from llm4rec.io import sha256_file, stable_hash
from llm4rec.llm import precision
from llm4rec.llm.policy_export import policy_parent, restore_policy
from llm4rec.llm.rl import GrpoConfig, train_grpo
from llm4rec.llm.selection import CheckpointSelection
from llm4rec.llm.training import training_windows
from llm4rec.models import ResolvedInput


class GrpoRecommender:
    """The parent's recommender, trained on by GRPO (module doc)."""

    def __init__(
        self,
        name: str,
        cfg: GrpoConfig,
        seed: int,
        device: str,
        selection: str,
        inputs: Mapping[str, ResolvedInput],
    ):
        self.name, self.cfg, self.seed, self.selection_metric = name, cfg, seed, selection
        self.policy, self.record, self.parent = policy_parent(name, seed, device, selection, inputs)

    @property
    def model(self):
        return self.parent.model

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

    def rank(self, histories: Mapping[str, Sequence[str]], k: int) -> pd.DataFrame:
        return self.parent.rank(histories, k)

    def export(self, out_dir: Path, split: Split) -> dict[str, str]:
        return {}

    def inference_cost(self) -> dict[str, float]:
        return self.parent.inference_cost()


def build(
    name: str, config: GrpoConfig, seed: int, device: str, selection: str, inputs: dict
) -> GrpoRecommender:
    return GrpoRecommender(name, config, seed, device, selection, inputs)
