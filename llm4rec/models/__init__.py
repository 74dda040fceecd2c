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

Adding a model is one module with a factory and one entry in ``MODELS`` below; the workflow,
evaluator, tracking and reports need no change. A worked example that consumes another run's
export is ``baselines/embedding_knn.py`` (README, "Adding a model").
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from llm4rec.costs import (
    BEAM_AGREEMENT_COSTS,
    COLD_START_COSTS,
    COSTS,
    SEMANTIC_ID_COSTS,
    TEXT_RETENTION_COSTS,
    Cost,
)
from llm4rec.data.split import Split
from llm4rec.evaluation.metrics import SELECTION_METRIC

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


@dataclass(frozen=True)
class Paradigm:
    """A model family: its row group in the tables and its colour in the figures."""

    name: str
    title: str
    color: str


# Table and figure order. A family missing here still renders (after these, in grey).
PARADIGM_LIST = [
    Paradigm("baseline", "Baselines", "#4C72B0"),
    Paradigm("text_prompted", "Text-prompted", "#DD8452"),
    Paradigm("cf_injected", "CF-injected", "#55A868"),
    Paradigm("semantic_id", "Semantic-ID", "#C44E52"),
    Paradigm("moe_expert", "MoE-expert", "#8172B3"),
    Paradigm("lm_representation", "LM representations", "#937860"),
    Paradigm("reindexed", "Reindexed LLM (one token per item)", "#DA8BC3"),
]
PARADIGMS = {p.name: p for p in PARADIGM_LIST}
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


@dataclass(frozen=True)
class InputSlot:
    """Something a model consumes: files from another run of the grid (same dataset and seed) or
    from an artifact (an auxiliary rule's output). The grid entry picks the source under
    ``inputs: {slot: {run: MODEL}}`` or ``{slot: {artifact: NAME, params: {...}}}``; ``default``
    is used when it does not."""

    files: tuple[str, ...]
    default: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # whether the run may come from another dataset of the grid (`{run: M, dataset: D}`): no |
    # allowed | required (a zero-shot transfer row, whose items are matched through their text)
    across_datasets: str = "no"


@dataclass(frozen=True)
class ArtifactSpec:
    """An auxiliary rule's output, built once per dataset, seed and params by
    ``builder(split, params, seed, out_dir) -> dict`` (the ``artifact`` rule)."""

    name: str
    builder: str  # "module:function"
    files: tuple[str, ...]
    config: str | None = None  # "module:Dataclass" its params are checked against
    per_seed: bool = True  # False: one artifact per dataset and params, whatever the run's seed
    description: str = ""


@dataclass(frozen=True)
class ResolvedInput:
    """One consumed input as the recommender receives it: {file name: path}, and its origin."""

    paths: dict[str, Path]
    source: str  # e.g. "run bpr/seed0 (config 1a2b3c4d5e6f)" or "artifact item_text_lsa/abc123"


@dataclass(frozen=True)
class BuildSpec:
    """What a row's factory builds from (`build(spec)`): the row, its config parsed by its config
    class (defaults and variant overrides filled in), the run's seed and device, the validation
    metric that selects its epochs and checkpoints, and its resolved inputs by slot."""

    name: str
    config: Any
    seed: int
    device: str = "cpu"
    selection: str = SELECTION_METRIC
    inputs: Mapping[str, ResolvedInput] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    paradigm: str  # a key of PARADIGMS
    factory: str  # "module:function", imported only when the model is built
    description: str = ""
    config: str | None = (
        None  # "module:Dataclass" its params are checked against (None: takes none)
    )
    display: str = ""  # the name in paper tables (default: the registry name)
    exports: tuple[str, ...] = ()  # files `export` writes, which other runs may consume
    inputs: dict[str, InputSlot] = field(default_factory=dict)
    costs: tuple[
        Cost, ...
    ] = ()  # its own cost/validity figures, reported by fit under "costs" (always=False)
    # "module:function(name, params, resolved) -> {key: value}" for a config that is not a dataclass
    # (RecBole's): the model's hyper-parameters, chosen values over the library's resolved ones (see
    # `hyperparameters`)
    hyperparameters: str | None = None
    # A variant is its parent plus data: `overrides` are the values that make it the variant (a grid
    # may repeat them, never contradict them); `defaults` its own defaults over the config class's,
    # which a grid may change; `not_applicable` the settings that do not apply to it, recorded as
    # what ran whatever the grid shares with the parent (zero-shot: no LoRA, 0 steps). All are
    # applied in `check_params`, before the run hash, run.json and MLflow.
    parent: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    not_applicable: dict[str, Any] = field(default_factory=dict)
    # it ranks with each user's request (a steered row, AlphaRec with an intention): compared only
    # with itself without one and with request-aware references (the steer table), never in an
    # accuracy table beside rows that cannot read the request
    reads_requests: bool = False
    # what its ablation also tests it against, beside its parent (the claim it is named for): model
    # names, or "input:<slot>" for the run it consumes through that slot (RTA's gate: the SASRec run
    # it gates with)
    references: tuple[str, ...] = ()
    # the table its comparisons belong to: accuracy (the main and ablation tables), or
    # beam_vs_exact (an exact-ranking row, set against its parent's beam on its own table)
    table: str = "accuracy"
    # it trains and ranks on several processes when its job has several GPUs (llm4rec.llm.
    # distributed: the SFT-trained LLM rows, their batches dealt across ranks); any other row runs
    # in one process, and a grid asking it for `gpu` > 1 is refused
    multi_process: bool = False

    @property
    def title(self) -> str:
        return self.display or self.name


_RECBOLE_FACTORY, _RECBOLE_CONFIG = (
    "baselines.recbole_models:build",
    "baselines.recbole_models:recbole_params",
)
_RECBOLE_HYPERPARAMETERS = "baselines.recbole_models:recbole_hyperparameters"
_LINEAR_PROBE = {"mapping": "linear", "graph_layers": 0}
# every RecBole baseline: each evaluated phase's full-catalogue scores (RTA's gating consumes them)
SCORE_EXPORTS = ("scores_valid.npy", "users_valid.txt", "scores_test.npy", "users_test.txt")
# the `llm_states` artifact's files (llm4rec.paradigms.rta.build_llm_states), what RTA rows consume
LLM_STATES_FILES = (
    "states.npy",
    "states.parquet",
    "title_tokens.npy",
    "token_rows.npy",
    "states.json",
)
_CF_EXPORTS = ("item_embeddings.npy", "user_embeddings.npy", "user_ids.txt", *SCORE_EXPORTS)
# a generative recommender's selected weights and how to rebuild it (llm4rec.llm.policy_export)
POLICY_EXPORTS = ("policy.pt", "policy.json")


def _llm(
    name: str,
    module: str,
    config: str,
    paradigm: str,
    description: str,
    display: str,
    inputs: dict[str, InputSlot] | None = None,
    costs: tuple[Cost, ...] = (),
    reads_text: bool = True,
    parent: str | None = None,
    overrides: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
    not_applicable: dict[str, Any] | None = None,
    exports: tuple[str, ...] = (),
) -> ModelSpec:
    """An LLM model family's entry: `build` and its config class in llm4rec.paradigms.<module>;
    every LLMRecommender over a language model reports its text retention (perplexity before/after
    training). A variant names its `parent` and the `overrides` / `defaults` that make it one."""
    return ModelSpec(
        name,
        paradigm,
        f"llm4rec.paradigms.{module}:build",
        description,
        config=f"llm4rec.paradigms.{module}:{config}",
        display=display,
        exports=exports,
        inputs=inputs or {},
        costs=costs + (TEXT_RETENTION_COSTS if reads_text else ()),
        parent=parent,
        overrides=overrides or {},
        defaults=defaults or {},
        not_applicable=not_applicable or {},
        multi_process=True,  # train_sft and LLMRecommender's dealt ranking batches
    )


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `override`'s values, merged key by key into nested mappings."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            deep_merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def _variant(name: str, parent: str, description: str, display: str, **changes: Any) -> _Variant:
    """A registry variant: its parent's entry (factory, config class, paradigm, inputs, costs) plus
    the `overrides` / `defaults` / `not_applicable` (or `inputs`) in `changes` that make it one."""
    return _Variant(name, parent, description, display, changes)


@dataclass(frozen=True)
class _Variant:
    name: str
    parent: str
    description: str
    display: str
    changes: dict[str, Any]

    def resolve(self, parent: ModelSpec) -> ModelSpec:
        """The parent's entry with this variant's changes. A variant of a variant inherits what
        made its parent one (overrides, defaults, not_applicable: its own on top, nested keys
        merged), as a subclass would; what it is compared with (`references`) is its own."""
        inherited = {
            key: deep_merge(getattr(parent, key), self.changes.get(key, {}))
            for key in ("overrides", "defaults", "not_applicable")
        }
        return dataclasses.replace(
            parent,
            name=self.name,
            description=self.description,
            display=self.display,
            parent=self.parent,
            **{"references": ()} | self.changes | inherited,
        )


@dataclass(frozen=True)
class _PolicyStage:
    """A row built on a registered parent's exported policy (llm4rec.llm.policy_export), with
    the parent's other inputs, compared with its parent: an RL stage, a steered row, an
    exact-ranking row."""

    name: str
    parent: str
    display: str
    factory: str
    config: str
    description: str
    uses: str  # what the row does with the policy (its input slot's description)
    costs: tuple[Cost, ...] = ()  # cost figures beyond the parent's
    reads_requests: bool = False  # a steered row
    table: str = "accuracy"  # an exact-ranking row: beam_vs_exact

    def resolve(self, parent: ModelSpec) -> ModelSpec:
        policy = InputSlot(
            POLICY_EXPORTS, {"run": self.parent}, f"{self.uses} ({self.parent}'s selected weights)"
        )
        return dataclasses.replace(
            parent,
            name=self.name,
            description=self.description,
            display=self.display,
            factory=self.factory,
            config=self.config,
            exports=(),
            inputs={**parent.inputs, "policy": policy},
            costs=parent.costs + self.costs,
            hyperparameters=None,
            parent=self.parent,
            overrides={},
            defaults={},
            not_applicable={},
            reads_requests=self.reads_requests,
            references=(),
            table=self.table,
            multi_process=False,
        )


def _grpo(name: str, parent: str, display: str) -> _PolicyStage:
    """An RL stage over a registered generative recommender: GRPO (llm4rec.paradigms.rl) from the
    parent run's exported policy."""
    return _PolicyStage(
        name,
        parent,
        display,
        "llm4rec.paradigms.rl:build",
        "llm4rec.llm.rl:GrpoConfig",
        f"{parent} trained further by GRPO on recommendation rewards "
        "(Rec-R1 / MiniOneRec / STARec)",
        "the fine-tuned policy GRPO starts from",
    )


def _steered(name: str, parent: str, display: str, trained: bool = False) -> _PolicyStage:
    """A steered row over a registered LLM that reads text: the parent run's exported weights,
    untouched, ranking with each user's request in its prompt (llm4rec.paradigms.steer).
    `trained`: the parent's training windows carried requests (its `train_requests`)."""
    what = "steerability after training with requests" if trained else "zero-shot steerability"
    return _PolicyStage(
        name,
        parent,
        display,
        "llm4rec.paradigms.steer:build",
        "llm4rec.paradigms.steer:SteerConfig",
        f"{parent}'s trained weights ranking with each user's request (written from the target's "
        f"metadata, never its title) in the prompt: {what}",
        "the model that ranks with the request",
        reads_requests=True,
    )


def _exact(name: str, parent: str, display: str) -> _PolicyStage:
    """An exact-ranking row over a registered generative recommender: the parent run's exported
    weights ranking by the exact full-catalogue likelihood (llm4rec.paradigms.exact), with the
    beam's agreement as its cost figures."""
    return _PolicyStage(
        name,
        parent,
        display,
        "llm4rec.paradigms.exact:build",
        "llm4rec.paradigms.exact:ExactConfig",
        f"{parent}'s trained weights ranking by the exact full-catalogue likelihood (a beam as "
        "wide as the catalogue), against its beam",
        "the model ranked exactly",
        BEAM_AGREEMENT_COSTS,
        table="beam_vs_exact",
    )


def _registry(entries: list[ModelSpec | _Variant | _PolicyStage]) -> dict[str, ModelSpec]:
    """Registry entries in order, each variant resolved against its parent (listed before it)."""
    specs: dict[str, ModelSpec] = {}
    for entry in entries:
        spec = entry.resolve(specs[entry.parent]) if not isinstance(entry, ModelSpec) else entry
        specs[spec.name] = spec
    return specs


def _semantic_ids(quantizer: str | None = None) -> dict[str, InputSlot]:
    """The code table a semantic-ID model consumes: the `semantic_ids` artifact of its split."""
    params = {"params": {"quantizer": quantizer}} if quantizer else {}
    return {
        "codes": InputSlot(
            ("codes.npy", "codebook_stats.json"),
            {"artifact": "semantic_ids", **params},
            "each item's code tuple (rows in items.parquet order) and the tokenizer's statistics",
        )
    }


def _item_text(params: dict[str, Any] | None = None) -> dict[str, InputSlot]:
    """The item representations AlphaRec consumes: the `item_text_embeddings` artifact (frozen
    language-model embeddings of each item's text; `params` pick the encoder)."""
    return {
        "text": InputSlot(
            ("item_embeddings.npy", "encoder.json"),
            {"artifact": "item_text_embeddings", **({"params": params} if params else {})},
            "each item's text embedding (rows in items.parquet order) and the encoder's config",
        )
    }


def _llm_states(extra: dict[str, InputSlot] | None = None) -> dict[str, InputSlot]:
    """What a Reindex-Then-Adapt model consumes: the frozen LLM's queries and title tokens (the
    `llm_states` artifact), and for gating a finished baseline's scores (`recsys`)."""
    return {
        "states": InputSlot(
            LLM_STATES_FILES,
            {"artifact": "llm_states"},
            "the frozen LLM's last hidden state after each history item, and each item's title "
            "tokens with their output embeddings",
        ),
        **(extra or {}),
    }


def _cf_source() -> dict[str, InputSlot]:
    """The CF signal a CF-injected model consumes: a finished CF run's item embeddings (same dataset
    and seed); SASRec by default, BPR or LightGCN under the grid entry's
    `inputs: {cf_source: {run: ...}}`."""
    return {
        "cf_source": InputSlot(
            ("item_embeddings.npy",),
            {"run": "sasrec"},
            "item embeddings of a trained CF model, rows in items.parquet order",
        )
    }


MODELS: dict[str, ModelSpec] = _registry(
    [
        ModelSpec(
            "mostpop",
            "baseline",
            _RECBOLE_FACTORY,
            "RecBole Pop: training popularity (sanity floor)",
            config=_RECBOLE_CONFIG,
            display="MostPop",
            exports=SCORE_EXPORTS,
            hyperparameters=_RECBOLE_HYPERPARAMETERS,
        ),
        ModelSpec(
            "bpr",
            "baseline",
            _RECBOLE_FACTORY,
            "RecBole BPR: matrix factorisation with BPR loss",
            config=_RECBOLE_CONFIG,
            display="BPR",
            exports=_CF_EXPORTS,
            hyperparameters=_RECBOLE_HYPERPARAMETERS,
        ),
        ModelSpec(
            "lightgcn",
            "baseline",
            _RECBOLE_FACTORY,
            "RecBole LightGCN: graph convolution CF",
            config=_RECBOLE_CONFIG,
            display="LightGCN",
            exports=_CF_EXPORTS,
            hyperparameters=_RECBOLE_HYPERPARAMETERS,
        ),
        ModelSpec(
            "sasrec",
            "baseline",
            "baselines.sasrec:build",
            "SASRec as its paper trains it: RecBole's network, each user's sequence once an epoch, "
            "binary cross-entropy against a sampled negative at every position (Kang & McAuley)",
            config="baselines.sasrec:SasrecConfig",
            display="SASRec",
            exports=("item_embeddings.npy", *SCORE_EXPORTS),
        ),
        ModelSpec(
            "sasrec_ce",
            "baseline",
            "baselines.sasrec:build",
            "SASRec+: the same network and training with full softmax cross-entropy over the "
            "catalogue at every position (Klenitskiy & Vasilev, RecSys 2023)",
            config="baselines.sasrec:SasrecCeConfig",
            display="SASRec+ (CE)",
            exports=("item_embeddings.npy", *SCORE_EXPORTS),
        ),
        ModelSpec(
            "sasrec_recbole",
            "baseline",
            _RECBOLE_FACTORY,
            "RecBole's SASRec training: every prefix of every user's sequence one example, the "
            "loss at its end (RecBole 1.2.1)",
            config=_RECBOLE_CONFIG,
            display="SASRec (RecBole prefixes)",
            exports=("item_embeddings.npy", *SCORE_EXPORTS),
            hyperparameters=_RECBOLE_HYPERPARAMETERS,
            parent="sasrec",
        ),
        ModelSpec(
            "emb_knn",
            "baseline",
            "baselines.embedding_knn:build",
            "cosine kNN over item embeddings consumed from another run (default: BPR) or an "
            "artifact",
            config="baselines.embedding_knn:EmbeddingKnnConfig",
            display="Emb-kNN",
            inputs={
                "embeddings": InputSlot(
                    ("item_embeddings.npy",),
                    {"run": "bpr"},
                    "item embeddings, rows in items.parquet order",
                )
            },
        ),
        _llm(
            "text_prompted",
            "text_prompted",
            "TextPromptedConfig",
            "text_prompted",
            "history as titles -> fine-tuned causal LM (LoRA) -> catalogue-constrained beam search",
            "Text-prompted (LoRA)",
            exports=POLICY_EXPORTS,
        ),
        _variant(
            "text_prompted_zeroshot",
            "text_prompted",
            "the same prompt and constrained decoding, no fine-tuning",
            "Text-prompted (zero-shot)",
            overrides={"zero_shot": True},
            not_applicable={"lora": None, "sft": {"steps": 0}},
        ),
        _llm(
            "cf_llara",
            "cf_injected",
            "CfLlaraConfig",
            "cf_injected",
            "history as titles, each followed by its projected CF embedding (a soft token) -> "
            "LoRA -> constrained title decoding (LLaRA)",
            "LLaRA (CF soft tokens)",
            _cf_source(),
            exports=POLICY_EXPORTS,
        ),
        _variant(
            "cf_llara_permuted",
            "cf_llara",
            "cf_llara with every soft token carrying another item's CF embedding (fixed "
            "derangement): does the LLM use it?",
            "LLaRA (permuted CF)",
            overrides={"cf": {"permuted": True}},
        ),
        _llm(
            "cf_e4srec",
            "cf_injected",
            "CfE4SRecConfig",
            "cf_injected",
            "history as projected CF embeddings only -> LoRA -> an output layer over all items, "
            "one forward per user (E4SRec)",
            "E4SRec (CF soft tokens)",
            _cf_source(),
            exports=POLICY_EXPORTS,
        ),
        _variant(
            "cf_e4srec_allpos",
            "cf_e4srec",
            "cf_e4srec with the harness's training: next-item loss at every history position (no "
            "response prompt) and a log-popularity item bias over a zero-initialised output layer",
            "E4SRec (all positions, pop. prior)",
            overrides={
                "loss_positions": "all",
                "response": "",
                "item_bias": "log_popularity",
                "head_init": "zero",
            },
        ),
        _variant(
            "cf_e4srec_permuted",
            "cf_e4srec",
            "cf_e4srec with every soft token carrying another item's CF embedding (fixed "
            "derangement)",
            "E4SRec (permuted CF)",
            overrides={"cf": {"permuted": True}},
        ),
        _llm(
            "idiomoe",
            "idiomoe",
            "IdiomoeConfig",
            "moe_expert",
            "item IDs as new tokens; FFN split into text and item experts routed by token type "
            "(IDIOMoE)",
            "IDIOMoE",
            exports=POLICY_EXPORTS,
        ),
        _variant(
            "idiomoe_popprior",
            "idiomoe",
            "IDIOMoE with untied item output vectors starting at zero over a learned "
            "log-popularity item bias",
            "IDIOMoE (pop. prior)",
            overrides={"item_head": "untied", "item_bias": "log_popularity"},
        ),
        _variant(
            "idiomoe_learned_router",
            "idiomoe",
            "IDIOMoE with a learned per-token gate between the experts instead of token-type "
            "routing",
            "IDIOMoE (learned router)",
            overrides={"routing": "learned"},
        ),
        _variant(
            "idiomoe_requests",
            "idiomoe",
            "IDIOMoE trained with requests (NEO's instruction mixing): a seeded half of its "
            "training windows carry their last item's request (genres and decade, never the "
            "title) after the instruction, as text tokens; ranks without one (its steered row "
            "with one)",
            "IDIOMoE (trained with requests)",
            defaults={"train_requests": {"share": 0.5}},
        ),
        _variant(
            "idiomoe_entangled",
            "idiomoe",
            "the same item tokens and training, no expert split: the shared FFN tuned with LoRA",
            "Item tokens, entangled FFN",
            overrides={"expert_layers": "none"},
            defaults={
                "lora": {
                    "rank": 16,
                    "alpha": 32,
                    "dropout": 0.0,
                    "target_modules": ["gate_proj", "up_proj", "down_proj"],
                }
            },
        ),
        _llm(
            "sid_tiger",
            "semantic_id.tiger",
            "TigerConfig",
            "semantic_id",
            "semantic IDs (RQ-VAE over item-text embeddings) -> T5 from scratch -> "
            "trie-constrained beam search (TIGER)",
            "TIGER (semantic IDs)",
            _semantic_ids(),
            SEMANTIC_ID_COSTS,
            reads_text=False,
            exports=POLICY_EXPORTS,
        ),
        _variant(
            "sid_random",
            "sid_tiger",
            "sid_tiger on random code tuples of the same shape (what semantic structure buys)",
            "TIGER (random IDs)",
            inputs=_semantic_ids("random"),
        ),
        _llm(
            "sid_llm",
            "semantic_id.llm",
            "SidLlmConfig",
            "semantic_id",
            "semantic IDs as new tokens of a pretrained LLM (LoRA + code embeddings) -> "
            "trie-constrained beam search",
            "SID-LLM (LoRA)",
            _semantic_ids(),
            SEMANTIC_ID_COSTS,
            exports=POLICY_EXPORTS,
        ),
        ModelSpec(
            "alpharec",
            "lm_representation",
            "llm4rec.paradigms.alpharec:build",
            "frozen LM embeddings of item text -> shared MLP -> LightGCN propagation -> InfoNCE; "
            "users are the mean of their history (AlphaRec)",
            config="llm4rec.paradigms.alpharec:AlphaRecConfig",
            display="AlphaRec",
            inputs=_item_text(),
            exports=("alpharec.pt", "alpharec.json"),
        ),
        _variant(
            "alpharec_zeroshot",
            "alpharec",
            "AlphaRec trained on another dataset (inputs.source names it), ranking this one's "
            "users "
            "with no training here: its map over this dataset's item text, this training graph "
            "(AlphaRec's zero-shot transfer, Table 4)",
            "AlphaRec (zero-shot transfer)",
            not_applicable={"epochs": 0},
            # the floors it must beat: the same architecture and graph untrained, and popularity
            references=("alpharec_untrained", "mostpop"),
            inputs={
                **_item_text(),
                "source": InputSlot(
                    ("alpharec.pt", "alpharec.json"),
                    {"run": "alpharec"},
                    "a finished AlphaRec run on another dataset: its trained map and encoder",
                    across_datasets="required",
                ),
            },
        ),
        _variant(
            "alpharec_untrained",
            "alpharec",
            "AlphaRec at its seeded random initialisation, never trained: its MLP and LightGCN "
            "propagation over this training graph, the floor a transferred map must beat (the "
            "zero-shot row's comparison)",
            "AlphaRec, untrained",
            not_applicable={"epochs": 0},
        ),
        _variant(
            "alpharec_linear",
            "alpharec",
            "AlphaRec's linear-mapping probe (its RQ1): one bias-free linear map of the LM "
            "embeddings, no graph",
            "Linear map of LM embeddings",
            overrides=_LINEAR_PROBE,
        ),
        _variant(
            "alpharec_linear_untrained",
            "alpharec_linear",
            "the linear-mapping probe at its seeded random initialisation, never trained: the "
            "floor a transferred map must beat",
            "Linear map, untrained",
            not_applicable={"epochs": 0},
        ),
        _variant(
            "alpharec_linear_llm",
            "alpharec_linear",
            "the linear-mapping probe over a backbone LLM's mean-pooled hidden states (default "
            "SmolLM2-135M; the grid may name another) instead of a sentence encoder",
            "Linear map of LLM states",
            inputs=_item_text({"kind": "backbone", "model": "smollm2-135m-instruct"}),
        ),
        _variant(
            "alpharec_intent",
            "alpharec",
            "AlphaRec ranking with a user intention (its Table 5): the user's vector blended with "
            "the mapped embedding of a request written from the target's genres and decade",
            "AlphaRec + intention",
            defaults={"intention": {"enabled": True}},
            reads_requests=True,
        ),
        ModelSpec(
            "rta_reindex",
            "reindexed",
            "llm4rec.paradigms.rta:build",
            "each item one new token of a frozen LLM (an aggregator over its title's token "
            "embeddings, contrastive loss); one forward and a softmax over item tokens "
            "(Reindex-Then-Adapt, reindex step)",
            config="llm4rec.paradigms.rta:RtaConfig",
            display="RTA (reindex)",
            inputs=_llm_states(),
            # the paper's comparison for an unadapted reindexed LLM: popularity and the LLM's
            # own zero-shot recommendations
            references=("mostpop", "text_prompted_zeroshot"),
        ),
        _variant(
            "rta_bias",
            "rta_reindex",
            "the reindexed LLM adapted by a bias term: softmax(g + b), b trained on the "
            "platform's training data (RTA, bias adjustment)",
            "RTA (reindex + bias)",
            overrides={"adapt": {"kind": "bias"}},
            references=("mostpop", "text_prompted_zeroshot"),
        ),
        _variant(
            "rta_recsys",
            "rta_reindex",
            "the reindexed LLM gated with a finished baseline's scores (default SASRec): "
            "a log p_LLM + (1 - a) log p_RecSys, a chosen on validation (RTA, RecSys gating)",
            "RTA (reindex + RecSys gating)",
            overrides={"adapt": {"kind": "gating"}},
            # the paper's claim: the gate beats both of its parts
            references=("input:recsys",),
            inputs=_llm_states(
                {
                    "recsys": InputSlot(
                        SCORE_EXPORTS,
                        {"run": "sasrec"},
                        "a finished baseline run's full-catalogue scores per evaluated phase",
                    )
                }
            ),
        ),
        ModelSpec(
            "rta_reindex_steer",
            "reindexed",
            "llm4rec.paradigms.rta:build",
            "rta_reindex (trained as it: the same aggregator) ranking with each user's request in "
            "the frozen LLM's prompt after the history titles (a forward at ranking time)",
            config="llm4rec.paradigms.rta:SteeredRtaConfig",
            display="RTA (reindex) + request",
            inputs=_llm_states(),
            parent="rta_reindex",
            reads_requests=True,
        ),
        _grpo("text_prompted_grpo", "text_prompted", "Text-prompted (LoRA) + GRPO"),
        _grpo("sid_tiger_grpo", "sid_tiger", "TIGER + GRPO"),
        _grpo("sid_llm_grpo", "sid_llm", "SID-LLM (LoRA) + GRPO"),
        _steered("text_prompted_steer", "text_prompted", "Text-prompted (LoRA) + request"),
        _steered("text_prompted_zeroshot_steer", "text_prompted_zeroshot", "Zero-shot + request"),
        _steered("cf_llara_steer", "cf_llara", "LLaRA + request"),
        _steered("cf_e4srec_steer", "cf_e4srec", "E4SRec + request"),
        _steered("idiomoe_steer", "idiomoe", "IDIOMoE + request"),
        _steered(
            "idiomoe_requests_steer",
            "idiomoe_requests",
            "IDIOMoE (trained with requests) + request",
            trained=True,
        ),
        _steered("sid_llm_steer", "sid_llm", "SID-LLM (LoRA) + request"),
        _PolicyStage(
            "sid_tiger_coldstart",
            "sid_tiger",
            "TIGER + cold-start retrieval",
            "llm4rec.paradigms.semantic_id.cold_start:build",
            "llm4rec.paradigms.semantic_id.cold_start:ColdStartConfig",
            "sid_tiger's trained weights with TIGER's cold-start retrieval: after each decoded "
            "item, the unseen items sharing its quantized codes, at most epsilon of every top-p",
            "the model whose decoded items retrieve the unseen ones",
            COLD_START_COSTS,
        ),
        _exact("text_prompted_exact", "text_prompted", "Text-prompted (LoRA), exact ranking"),
        _exact("cf_llara_exact", "cf_llara", "LLaRA, exact ranking"),
        _exact("sid_tiger_exact", "sid_tiger", "TIGER, exact ranking"),
        _exact("sid_llm_exact", "sid_llm", "SID-LLM (LoRA), exact ranking"),
    ]
)


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
    """The harness's cost figures, then every model family's own (llm4rec.costs), each key once."""
    found = {c.key: c for c in COSTS}
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
