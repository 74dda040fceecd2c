"""The one interface every recommender implements, baseline or LLM, and the model registry.

A recommender is anything with these four methods::

    class Recommender(Protocol):
        def fit(self, split: Split, workdir: Path) -> dict: ...
        def rank(self, histories: Histories, k: int) -> pd.DataFrame: ...
        def export(self, out_dir: Path, split: Split) -> dict[str, str]: ...
        def inference_cost(self) -> dict[str, float]: ...

- ``fit`` trains on ``split`` (the harness's split: train for learning, valid for model
  selection on the grid's selection metric; never test) and returns facts to log (epochs, best
  validation score, ``parameters_total``, ``parameters_trainable``, ...). ``workdir`` is the
  run's own scratch folder.
- ``rank`` receives, per user, the chronological item history the model may condition on
  (train items when ranking for validation, train + validation items for test) and returns
  the top-``k`` items per user as a frame ``user_id, rank (1..k), item_id, score``, drawn from
  the whole catalogue (``split.items``) minus that history.
- ``export`` writes the files other runs may consume (``ModelSpec.exports``, e.g. item
  embeddings) into ``out_dir`` and returns {name: description}; ``{}`` when it has none.
- ``inference_cost`` returns counts since its last call (LLM runs: tokens, beam slots); the
  runner asks once per ranked phase. ``{}`` when the model counts nothing.
- A model that reads a user's request sets ``request_template`` (a
  ``llm4rec.data.requests.RequestTemplate``); the runner then calls
  ``rank(histories, k, requests={user: text})``, each request written from that user's target
  metadata (never its title), and run.json records the template (AlphaRec's intentions).

A model is built by its factory ``build(spec)``, from one ``BuildSpec``: the row's ``name``;
its ``config``, the grid entry's params parsed by ``ModelSpec.config`` (``check_params``);
the run's ``seed`` and ``device``; ``selection``, the validation metric that picks epochs and
checkpoints (e.g. ``ndcg_at_10``); ``inputs``, the resolved files of what the model consumes
(``ModelSpec.inputs``: another run's export, or an artifact built by the ``artifact`` rule), as
``{slot: ResolvedInput}``.

Adding a model is one module with a factory and its rows in a module of
``llm4rec.models.rows`` (collected into ``MODELS`` with no list to edit); the workflow, evaluator,
tracking and reports need no change. A worked example that consumes another run's
export is ``baselines/embedding_knn.py`` (README, "Adding a model").
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from llm4rec.costs import COSTS, ROW_COSTS, Cost
from llm4rec.data.split import Split
from llm4rec.evaluation.metrics import SELECTION_METRIC
from llm4rec.models import rows

# the row vocabulary, re-exported: `from llm4rec.models import ModelSpec, ...`
from llm4rec.models.spec import (
    LLM_STATES_FILES,
    ArtifactSpec,
    BuildSpec,
    ModelSpec,
    ResolvedInput,
    collect,
    deep_merge,
)
from llm4rec.models.spec import (
    POLICY_EXPORTS as POLICY_EXPORTS,
)
from llm4rec.models.spec import (
    SCORE_EXPORTS as SCORE_EXPORTS,
)
from llm4rec.models.spec import (
    InputSlot as InputSlot,
)
from llm4rec.models.spec import (
    Paradigm as Paradigm,
)
from llm4rec.models.spec import (
    StageRow as StageRow,
)
from llm4rec.models.spec import (
    Variant as Variant,
)
from llm4rec.models.spec import (
    variant as variant,
)

RANKING_COLUMNS = ["user_id", "rank", "item_id", "score"]
# what `rank` takes: {user: chronological item history}, and {user: request} for a reader of
# requests (None: the plain ranking)
Histories = Mapping[str, Sequence[str]]
Requests = Mapping[str, str] | None


def ranking_frame(
    users: Sequence[str], scores: Any, top: Any, items: Sequence[str]
) -> pd.DataFrame:
    """The ranking frame of a top-k: `scores` and `top` [users, k] (torch.topk's, on the CPU),
    `top` indexing `items`; a non-finite score (a blocked item, where fewer than k are left) is
    dropped."""
    out = [
        (user, r + 1, items[int(i)], float(s))
        for user, srow, irow in zip(users, scores, top, strict=True)
        for r, (s, i) in enumerate(zip(srow.tolist(), irow.tolist(), strict=True))
        if math.isfinite(s)
    ]
    return pd.DataFrame(out, columns=RANKING_COLUMNS)


@runtime_checkable
class Recommender(Protocol):
    def fit(self, split: Split, workdir: Path) -> dict: ...

    def rank(self, histories: Histories, k: int) -> pd.DataFrame: ...

    def export(self, out_dir: Path, split: Split) -> dict[str, str]: ...

    def inference_cost(self) -> dict[str, float]: ...


def row_modules() -> list[ModuleType]:
    """Every module of llm4rec.models.rows (one or more per paradigm), in its paradigm's table
    order; nothing lists them, so a new module is collected as it is."""
    found = [
        importlib.import_module(f"{rows.__name__}.{module.name}")
        for module in pkgutil.iter_modules(rows.__path__)
    ]
    return sorted(found, key=lambda module: (module.PARADIGM.rank, module.__name__))


def collect_rows(modules: Sequence[ModuleType]) -> tuple[dict[str, Paradigm], dict[str, ModelSpec]]:
    """The paradigms (in table order) and the registry (rows in the modules' order, each variant
    or stage resolved against its parent) that `modules` declare: their `PARADIGM` and `ROWS`."""
    paradigms = {}
    for module in modules:
        paradigms.setdefault(module.PARADIGM.name, module.PARADIGM)
    return paradigms, collect([row for module in modules for row in module.ROWS])


# Table and figure order. A paradigm missing here still renders (after these, in grey).
PARADIGMS, MODELS = collect_rows(row_modules())
UNKNOWN_COLOR = "#7F7F7F"


def paradigm_rank(name: str) -> int:
    return list(PARADIGMS).index(name) if name in PARADIGMS else len(PARADIGMS)


def paradigm_title(name: str) -> str:
    return PARADIGMS[name].title if name in PARADIGMS else name


def paradigm_color(name: str) -> str:
    return PARADIGMS[name].color if name in PARADIGMS else UNKNOWN_COLOR


def model_title(name: str) -> str:
    """A model's name in paper tables and figures (ModelSpec.display; the key if unregistered)."""
    return MODELS[name].title if name in MODELS else name


ARTIFACTS: dict[str, ArtifactSpec] = {
    spec.name: spec
    for spec in [
        ArtifactSpec(
            "item_text_lsa",
            "llm4rec.data.item_text:build_lsa_embeddings",
            ("item_embeddings.npy",),
            config="llm4rec.data.item_text:LsaConfig",
            per_seed=False,
            description="TF-IDF + truncated SVD of each item's text (title, genres, description)",
        ),
        ArtifactSpec(
            "item_text_embeddings",
            "llm4rec.llm.text_encoders:build_text_embeddings",
            ("item_embeddings.npy", "encoder.json"),
            config="llm4rec.llm.text_encoders:EncoderConfig",
            per_seed=False,
            description="a frozen language model's embedding of each item's text (sentence "
            "encoder, or an LLM's mean-pooled hidden states)",
        ),
        ArtifactSpec(
            "llm_states",
            "llm4rec.paradigms.rta:build_llm_states",
            LLM_STATES_FILES,
            config="llm4rec.paradigms.rta:StatesConfig",
            per_seed=False,
            description="a frozen LLM's last hidden state after each of a user's recent history "
            "titles (one forward per user), and every item's title tokens",
        ),
        ArtifactSpec(
            "semantic_ids",
            "llm4rec.paradigms.semantic_id.codes:build_semantic_ids",
            ("codes.npy", "codebook_stats.json"),
            config="llm4rec.paradigms.semantic_id.codes:SemanticIdConfig",
            description="item text -> sentence embedding -> residual quantization -> unique code "
            "tuples",
        ),
    ]
}


def registered_costs() -> tuple[Cost, ...]:
    """The harness's cost figures, then those rows declare: first the ones llm4rec.costs names
    (in its order), then any other; each key once."""
    declared = {cost.key for spec in MODELS.values() for cost in spec.costs}
    found = {c.key: c for c in COSTS}
    found |= {c.key: c for c in ROW_COSTS if c.key in declared}
    for spec in MODELS.values():
        for cost in spec.costs:
            found.setdefault(cost.key, cost)
    return tuple(found.values())


def import_object(path: str) -> Any:
    """'module:attribute' -> the attribute (imported on demand)."""
    module_name, attr = path.split(":")
    return getattr(importlib.import_module(module_name), attr)


def variant_params(spec: ModelSpec, params: dict[str, Any]) -> dict[str, Any]:
    """A variant's params: its defaults, then the grid's params, then its overrides and what does
    not apply to it; a grid value that contradicts an override is an error naming both (nanoGPT's
    `from_pretrained`: a name is a set of overrides, and the rest is asserted)."""
    from llm4rec.params import ParamsError

    given = flat(params)
    for key, value in flat(spec.overrides).items():
        if key in given and given[key] != value:
            raise ParamsError(
                f"{spec.name}: params.{key} is {given[key]!r}, but {spec.name} is {spec.parent} "
                f"with {key} = {value!r} (set it on {spec.parent}, or leave it out here)"
            )
    return deep_merge(
        deep_merge(deep_merge(spec.defaults, params), spec.overrides), spec.not_applicable
    )


def row_function(spec: ModelSpec, name: str):
    """A function a row's module (its factory's) exports for the harness, or None: its
    `estimate_cost(config, cell)` (llm4rec plan, llm4rec.estimates) and `toy_params(params)`
    (llm4rec smoke and the rerun test: the row's own settings at toy cost)."""
    return getattr(importlib.import_module(spec.factory.split(":")[0]), name, None)


def check_params(spec: ModelSpec | ArtifactSpec, params: dict[str, Any]) -> Any:
    """Parse `params` (a variant's: `variant_params`) with the spec's config class; raise
    ParamsError naming an unknown key."""
    from llm4rec.params import ParamsError, from_params

    if isinstance(spec, ModelSpec):
        params = variant_params(spec, params)
    if spec.config is None:
        if params:
            raise ParamsError(
                f"{spec.name}: takes no parameters (got: {', '.join(sorted(params))})"
            )
        return None
    config = import_object(spec.config)
    return (
        from_params(config, params, spec.name)
        if isinstance(config, type)
        else config(spec.name, params)
    )


def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'sft': {'steps': 60}} -> {'sft.steps': 60}; lists and scalars are leaves."""
    if not isinstance(obj, dict):
        return {prefix.rstrip("."): obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out |= flat(value, f"{prefix}{key}.")
    return out


def hyperparameters(
    name: str, params: dict[str, Any], resolved: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A model's full hyper-parameters, flat ('sft.learning_rate': 0.0005): its config class's
    fields (the grid's values over the defaults), or, for a library-configured model, what its
    ModelSpec.hyperparameters says (the chosen values over the library's `resolved` config; None
    where that is not known yet)."""
    spec = MODELS[name]
    if spec.hyperparameters is not None:
        return import_object(spec.hyperparameters)(name, params, resolved)
    parsed = check_params(spec, dict(params))
    return (
        flat(dataclasses.asdict(parsed)) if dataclasses.is_dataclass(parsed) else flat(dict(params))
    )


def resolved_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """What a model is built with, as plain data: its config dataclass with every default and
    variant override filled in (a library-configured model: its checked params). The run hash covers
    this, so a changed default reruns the runs it changes."""
    return as_data(check_params(MODELS[name], dict(params)))


def as_data(config: Any) -> dict[str, Any]:
    """A parsed config as plain data: a dataclass's fields, or a library's checked params."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})


def build_model(
    name: str,
    params: dict[str, Any],
    seed: int,
    device: str,
    *,
    selection: str = SELECTION_METRIC,
    inputs: Mapping[str, ResolvedInput] | None = None,
) -> Recommender:
    """Instantiate a registered model by name, its params parsed by its config class (the
    runner builds from a grid cell's already parsed config: `build_row`)."""
    if name not in MODELS:
        raise KeyError(f"'{name}' is not a known model (known: {', '.join(sorted(MODELS))})")
    config = check_params(MODELS[name], dict(params))
    return build_row(BuildSpec(name, config, seed, device, selection, dict(inputs or {})))


def build_row(spec: BuildSpec) -> Recommender:
    """The row's recommender, from its factory; every declared input must be resolved."""
    declared = MODELS[spec.name].inputs
    missing = sorted(set(declared) - set(spec.inputs))
    if missing:
        raise ValueError(
            f"{spec.name}: input '{missing[0]}' was not resolved (it consumes: "
            f"{', '.join(declared)})"
        )
    return import_object(MODELS[spec.name].factory)(spec)
