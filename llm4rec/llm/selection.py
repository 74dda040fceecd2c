"""Checkpoint selection for LLM training: every `every` steps (and at the last), rank a fixed
sample of validation users and keep the trainable weights of the best step by the protocol's
selection metric (default NDCG@10), through the one evaluator.

The best weights, their score, step and rankings are saved atomically (`best.pt`) under the
run's training fingerprint, so a resumed run keeps the best checkpoint of its earlier part; the
selected step's rankings are reused when exactly those users and histories are ranked again.
The validation curve (step, score) is kept for the run record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from llm4rec.data.split import Split
from llm4rec.evaluation.evaluate import selection_score
from llm4rec.evaluation.metrics import SELECTION_METRIC, metric_cutoff
from llm4rec.io import write_with
from llm4rec.llm.training import trainable_state
from llm4rec.models import RANKING_COLUMNS


@dataclass
class CheckpointSelection:
    path: Path  # best.pt
    fingerprint: str  # the training run's identity: a best.pt written under another one is ignored
    split: Split
    users: list[str]  # the validation sample
    metric: str = SELECTION_METRIC
    every: int = 50
    total_steps: int = 0
    score: float = -1.0
    step: int = 0
    state: dict[str, torch.Tensor] | None = None
    rankings: pd.DataFrame | None = None
    curve: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        history = self.split.history("valid")
        self.histories = {u: list(history.get(u, [])) for u in self.users}
        if self.path.is_file():
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if saved["fingerprint"] == self.fingerprint:
                self.score, self.step, self.state = saved["score"], saved["step"], saved["state"]
                self.rankings = pd.DataFrame(saved["rankings"], columns=RANKING_COLUMNS)
                self.curve = [tuple(point) for point in saved.get("curve", [])]

    def on_step(
        self, model, rank: Callable[[Mapping[str, Sequence[str]], int], pd.DataFrame]
    ) -> Callable[[int, float], None]:
        """The training loop's per-step callback: evaluate on schedule, keep the best weights."""

        def select(step: int, _loss: float) -> None:
            if step % self.every and step != self.total_steps:
                return
            rankings = rank(self.histories, metric_cutoff(self.metric))
            score = selection_score(rankings, self.split, self.metric, self.users)
            self.curve.append((step, score))
            if score > self.score:
                self.score, self.step, self.state, self.rankings = (
                    score,
                    step,
                    trainable_state(model),
                    rankings,
                )
            self._save()  # the curve too, so a resumed run keeps it whole
            model.train()

        return select

    def _save(self) -> None:
        from llm4rec.llm import distributed

        if self.state is None or not distributed.is_main():  # several processes: one writer
            return
        state = {
            "fingerprint": self.fingerprint,
            "score": self.score,
            "step": self.step,
            "state": self.state,
            "rankings": list(self.rankings.itertuples(index=False, name=None)),
            "curve": self.curve,
        }
        write_with(self.path, lambda tmp: torch.save(state, tmp))

    def restore(self, model) -> bool:
        """Load the selected weights into the model; False when nothing was selected."""
        if self.state is None:
            return False
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in self.state.items():
                params[name].copy_(value)
        return True

    def reuse(self, histories: Mapping[str, Sequence[str]], k: int) -> pd.DataFrame | None:
        """The selected step's rankings, when exactly its users and histories are asked again."""
        if self.rankings is None or k > metric_cutoff(self.metric):
            return None
        if self.histories != {u: list(h) for u, h in histories.items()}:
            return None
        return self.rankings[self.rankings["rank"] <= k].reset_index(drop=True)

    def as_dict(self) -> dict:
        return {
            "selection_metric": self.metric,
            "valid_sample_users": len(self.users),
            "best_step": self.step,
            f"best_valid_{self.metric}_sample": self.score,
            "valid_curve": [{"step": s, self.metric: v} for s, v in self.curve],
        }
