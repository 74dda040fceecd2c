"""Steered rows (`*_steer`; issue 29): an LLM that reads text, ranking with each user's request.

A steered row consumes its parent run's exported weights (`policy`, llm4rec.llm.policy_export) and
whatever the parent consumed, rebuilds the parent's recommender, and trains nothing: the same
model ranks the same users as its parent, with one difference, the user's request in its prompt
("The user asks for something from the 1990s: comedy."), written from the phase's target metadata
(llm4rec.data.requests, never its title). Where the request goes is the paradigm's (its
`prompt(history, request)`): the end of the user message (text-prompted, LLaRA), after the
instruction and before the soft tokens (E4SRec) or the item tokens (IDIOMoE: text tokens, routed
to the text expert), on its own line before the code history (SID-LLM, NEO-style).

Set against its parent (the same weights without the request), it measures zero-shot
steerability when the parent trained without requests (the default), and steerability after
instruction mixing when the parent's `train_requests` was set (a seeded share of its training
windows carried their target's request, NEO-style); run.json's `fit.trained_with_requests` says
which.
The report's steer table (llm4rec.report.steer_table) prints both, with the parent's list
post-filtered to the request's constraint set as the reference a model that cannot read text gets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from llm4rec.data.atomic import DataError
from llm4rec.data.requests import RequestTemplate
from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, parent_ranking
from llm4rec.llm.policy_export import PolicyStage, frozen_policy_facts, restore_policy
from llm4rec.models import BuildSpec, Histories, Requests


@dataclass(frozen=True)
class SteerConfig:
    # the request written from each user's target (its wording is one of the grid's
    # evaluation.steer templates, so the report knows which constraint set it asks for)
    request: RequestTemplate = field(default_factory=RequestTemplate)
    line: str = "The user asks for {request}."  # the sentence the prompt carries it in

    def __post_init__(self) -> None:
        if "{request}" not in self.line:
            raise ValueError(f"steer: line must contain {{request}}, got {self.line!r}")


class SteeredRecommender(PolicyStage):
    """The parent's recommender on its exported weights, ranking with requests (module doc)."""

    cfg: SteerConfig

    def __init__(self, spec: BuildSpec):
        super().__init__(spec)
        name, cfg = self.name, self.cfg
        if not self.parent.reads_requests:
            raise DataError(
                f"{name}: the policy's model ({self.record['recommender']}) cannot read a request "
                "in its prompt; steer a model that reads text"
            )
        trained = self.parent.request_training
        if trained is not None and trained.line != cfg.line:
            raise DataError(
                f"{name}: line '{cfg.line}' differs from the one its parent trained with "
                f"('{trained.line}', train_requests.line); word the request as it was trained"
            )
        self.trained_with_requests = trained is not None and self.parent.trains
        self.parent.request_line = cfg.line
        self.request_template = cfg.request  # the runner writes one request per ranked user

    def fit(self, split: Split, workdir: Path) -> dict:
        parent = self.parent
        info, tensors = restore_policy(parent, split, self.policy)
        parent.model.requires_grad_(False).eval()
        return (
            info
            | frozen_policy_facts(parent, self.policy, self.record, tensors)
            | {
                "request_line": self.cfg.line,
                "trained_with_requests": self.trained_with_requests,
            }
        )

    def rank(self, histories: Histories, k: int, requests: Requests = None) -> pd.DataFrame:
        return self.parent.rank(histories, k, requests=requests if requests is not None else {})


def build(spec: BuildSpec) -> SteeredRecommender:
    return SteeredRecommender(spec)


def estimate_cost(config: SteerConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: the parent's model ranking this row's users, nothing trained
    (`parent_ranking`)."""
    estimate, _ = parent_ranking(cell)
    return dataclasses.replace(estimate, trainable=0)
