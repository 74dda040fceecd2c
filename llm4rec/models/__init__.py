"""The one interface every recommender implements, baseline or LLM, and the model registry.

A recommender is anything with two methods::

    class Recommender(Protocol):
        def fit(self, split: Split, workdir: Path) -> dict: ...
        def rank(self, histories: Mapping[str, Sequence[str]], k: int) -> pd.DataFrame: ...

- ``fit`` trains on ``split`` (the harness's split: train for learning, valid for model
  selection; never test) and returns facts to log (epochs, best validation score,
  ``parameters_total``, ``parameters_trainable``, ...). ``workdir`` is the run's own folder.
- ``rank`` receives, per user, the chronological item history the model may condition on
  (train items when ranking for validation, train + validation items for test) and returns
  the top-``k`` items per user as a frame ``user_id, rank (1..k), item_id, score``, drawn from
  the whole catalogue (``split.items``) minus that history.
- Optional ``export(out_dir)`` writes artefacts other paradigms reuse (embeddings).

Adding a model is one module with a ``build(name, params, seed, device)`` factory and one
entry in ``MODELS`` below; the workflow, evaluator and tracking need no change.

Worked example, a recommender that ranks by training popularity::

    class MostPopular:
        def fit(self, split, workdir):
            self.order = split.item_popularity().sort_values(ascending=False, kind="stable")
            return {"parameters_total": 0, "parameters_trainable": 0}

        def rank(self, histories, k):
            rows = []
            for user, history in histories.items():
                seen = set(history)
                top = [i for i in self.order.index if i not in seen][:k]
                rows += [(user, r + 1, item, float(self.order[item])) for r, item in enumerate(top)]
            return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score"])

Register it as ``MODELS["mostpop_py"] = ModelSpec("mostpop_py", "baseline", "mymodule:build")``
and list ``- name: mostpop_py`` under ``models:`` in a grid config.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from llm4rec.data.split import Split

RANKING_COLUMNS = ["user_id", "rank", "item_id", "score"]


@runtime_checkable
class Recommender(Protocol):
    def fit(self, split: Split, workdir: Path) -> dict: ...

    def rank(self, histories: Mapping[str, Sequence[str]], k: int) -> pd.DataFrame: ...


@dataclass(frozen=True)
class ModelSpec:
    name: str
    paradigm: str  # baseline | text_prompted | cf_injected | semantic_id | moe_expert
    factory: str  # "module:function", imported only when the model is built
    description: str = ""
    needs_gpu: bool = False


PARADIGMS = ("baseline", "text_prompted", "cf_injected", "semantic_id", "moe_expert")

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("mostpop", "baseline", "baselines.recbole_models:build", "RecBole Pop: training popularity (sanity floor)"),
        ModelSpec("bpr", "baseline", "baselines.recbole_models:build", "RecBole BPR: matrix factorisation with BPR loss"),
        ModelSpec("lightgcn", "baseline", "baselines.recbole_models:build", "RecBole LightGCN: graph convolution CF"),
        ModelSpec("sasrec", "baseline", "baselines.recbole_models:build", "RecBole SASRec: self-attentive sequential model"),
        ModelSpec("text_prompted", "text_prompted", "llm4rec.paradigms.text_prompted:build",
                  "history as titles -> fine-tuned causal LM (LoRA) -> catalogue-constrained beam search"),
        ModelSpec("text_prompted_zeroshot", "text_prompted", "llm4rec.paradigms.text_prompted:build",
                  "the same prompt and constrained decoding, no fine-tuning"),
    ]
}


def build_model(name: str, params: dict[str, Any], seed: int, device: str) -> Recommender:
    """Instantiate a registered model by name."""
    if name not in MODELS:
        raise KeyError(f"'{name}' is not a known model (known: {', '.join(sorted(MODELS))})")
    module_name, func_name = MODELS[name].factory.split(":")
    factory = getattr(importlib.import_module(module_name), func_name)
    return factory(name=name, params=dict(params), seed=seed, device=device)
