"""The vocabulary a row is declared in (llm4rec.models.rows: a module per paradigm, or more): its
`ModelSpec`, the inputs it consumes, and the constructors of the rows built from another row (a
`variant` of a parent, a `StageRow` over a parent's exported policy)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm4rec.costs import BEAM_AGREEMENT_COSTS, TEXT_RETENTION_COSTS, Cost
from llm4rec.evaluation.metrics import SELECTION_METRIC


@dataclass(frozen=True)
class Paradigm:
    """A paradigm: its row group in the tables and its colour in the figures."""

    name: str
    title: str
    color: str
    rank: int  # its place in tables and figures (row groups in ascending rank)


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
    # `parent`: the row this one is compared with in the ablation report (beside its
    # `references`) and starts from. A variant (`variant`) is its parent plus data: `overrides` are
    # the values that make it the variant (a grid may repeat them, never contradict them);
    # `defaults` its own defaults over the config class's, which a grid may change;
    # `not_applicable` the settings that do not apply to it, recorded as what ran whatever the grid
    # shares with the parent (zero-shot: no LoRA, 0 steps). All are applied in `check_params`,
    # before the run hash, run.json and MLflow. A stage (`StageRow`) ranks with the parent run's
    # weights, which it consumes through its declared `policy` input.
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
# a generative recommender's selected weights and how to rebuild it (llm4rec.llm.policy_export)
POLICY_EXPORTS = ("policy.pt", "policy.json")


def llm_row(
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
    """An LLM paradigm's base row: `build` and its config class in llm4rec.paradigms.<module>;
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


def variant(name: str, parent: str, description: str, display: str, **changes: Any) -> Variant:
    """A registry variant: its parent's entry (factory, config class, paradigm, inputs, costs) plus
    the `overrides` / `defaults` / `not_applicable` in `changes` that make it one, and any other
    `ModelSpec` field it changes (`inputs`, `references`, `reads_requests`, a `config` class that
    extends its parent's)."""
    return Variant(name, parent, description, display, changes)


@dataclass(frozen=True)
class Variant:
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
class StageRow:
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


def grpo_stage(name: str, parent: str, display: str) -> StageRow:
    """An RL stage over a registered generative recommender: GRPO (llm4rec.paradigms.grpo_stage)
    from the parent run's exported policy."""
    return StageRow(
        name,
        parent,
        display,
        "llm4rec.paradigms.grpo_stage:build",
        "llm4rec.llm.rl:GrpoConfig",
        f"{parent} trained further by GRPO on recommendation rewards "
        "(Rec-R1 / MiniOneRec / STARec)",
        "the fine-tuned policy GRPO starts from",
    )


def steered(name: str, parent: str, display: str, trained: bool = False) -> StageRow:
    """A steered row over a registered LLM that reads text: the parent run's exported weights,
    untouched, ranking with each user's request in its prompt (llm4rec.paradigms.steered).
    `trained`: the parent's training windows carried requests (its `train_requests`)."""
    what = "steerability after training with requests" if trained else "zero-shot steerability"
    return StageRow(
        name,
        parent,
        display,
        "llm4rec.paradigms.steered:build",
        "llm4rec.paradigms.steered:SteerConfig",
        f"{parent}'s trained weights ranking with each user's request (written from the target's "
        f"metadata, never its title) in the prompt: {what}",
        "the model that ranks with the request",
        reads_requests=True,
    )


def exact_ranking(name: str, parent: str, display: str) -> StageRow:
    """An exact-ranking row over a registered generative recommender: the parent run's exported
    weights ranking by the exact full-catalogue likelihood (llm4rec.paradigms.exact), with the
    beam's agreement as its cost figures."""
    return StageRow(
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


def collect(entries: list[ModelSpec | Variant | StageRow]) -> dict[str, ModelSpec]:
    """The registry: every entry by name, in order, each variant or stage resolved against its
    parent (which may be declared later, in another paradigm's module); a duplicate name or a
    parent declared nowhere is an error naming the row."""
    specs: dict[str, ModelSpec] = {}
    pending = list(entries)
    while pending:
        waiting = []
        for entry in pending:
            if entry.name in specs:
                raise ValueError(f"row '{entry.name}' is declared twice")
            if isinstance(entry, ModelSpec):
                specs[entry.name] = entry
            elif entry.parent in specs:
                specs[entry.name] = entry.resolve(specs[entry.parent])
            else:
                waiting.append(entry)
        if len(waiting) == len(pending):
            names = ", ".join(f"{e.name} (parent {e.parent})" for e in waiting)
            raise ValueError(f"rows whose parent is declared nowhere: {names}")
        pending = waiting
    order = {entry.name: i for i, entry in enumerate(entries)}
    return dict(sorted(specs.items(), key=lambda item: order[item[0]]))


def semantic_ids_input(quantizer: str | None = None) -> dict[str, InputSlot]:
    """The code table a semantic-ID model consumes: the `semantic_ids` artifact of its split."""
    params = {"params": {"quantizer": quantizer}} if quantizer else {}
    return {
        "codes": InputSlot(
            ("codes.npy", "codebook_stats.json"),
            {"artifact": "semantic_ids", **params},
            "each item's code tuple (rows in items.parquet order) and the tokenizer's statistics",
        )
    }


def item_text_input(params: dict[str, Any] | None = None) -> dict[str, InputSlot]:
    """The item representations AlphaRec consumes: the `item_text_embeddings` artifact (frozen
    language-model embeddings of each item's text; `params` pick the encoder)."""
    return {
        "text": InputSlot(
            ("item_embeddings.npy", "encoder.json"),
            {"artifact": "item_text_embeddings", **({"params": params} if params else {})},
            "each item's text embedding (rows in items.parquet order) and the encoder's config",
        )
    }


def llm_states_input(extra: dict[str, InputSlot] | None = None) -> dict[str, InputSlot]:
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


def cf_source_input() -> dict[str, InputSlot]:
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
