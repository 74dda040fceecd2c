"""The cost model's parts, which each row's `estimate_cost(config, cell)` (in its own module)
composes, and `llm4rec plan` sums and prices under a device profile.

An estimate is counted from the config and the dataset sizes, never from running the model:
tokens, FLOPs (2 per parameter per token forward, 2 more backward through the activations, 2 more
for the parameters that train), sequential decoding steps (each reads every weight), the beam
search's live beams (its host side), the layer passes (the latency floor), and the peak memory's
parts. `Estimate.seconds(profile)` prices it (llm4rec.plan.PROFILES).

A row's module exports `estimate_cost(config, cell: Cell) -> Estimate`; `Cell` gives it the
dataset's sizes, the users it ranks, its inputs, and the estimates of other rows (a stage's
parent) without importing the plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Shape:
    """A decoder-only backbone's shape."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def per_layer(self) -> int:
        return (
            2 * self.hidden * self.hidden
            + 2 * self.hidden * self.kv_dim
            + 3 * self.hidden * self.intermediate
        )

    @property
    def params(self) -> int:
        return self.vocab * self.hidden + self.layers * self.per_layer  # tied embeddings


# backbones known by name (an offline machine cannot read a hub id's config.json)
KNOWN_BACKBONES = {
    "smollm2-135m-instruct": Shape(576, 30, 1536, 49152, 9, 3),
    "HuggingFaceTB/SmolLM2-135M-Instruct": Shape(576, 30, 1536, 49152, 9, 3),
    "Qwen/Qwen2.5-0.5B-Instruct": Shape(896, 24, 4864, 151936, 14, 2),
    "Qwen/Qwen2.5-1.5B-Instruct": Shape(1536, 28, 8960, 151936, 12, 2),
    "Qwen/Qwen2.5-7B-Instruct": Shape(3584, 28, 18944, 152064, 28, 4),
}


def backbone_shape(name_or_path: str) -> Shape:
    from llm4rec.io import read_json

    if name_or_path in KNOWN_BACKBONES:
        return KNOWN_BACKBONES[name_or_path]
    config = Path(name_or_path).expanduser() / "config.json"
    if config.is_file():
        c = read_json(config)
        return Shape(
            c["hidden_size"],
            c["num_hidden_layers"],
            c["intermediate_size"],
            c["vocab_size"],
            c["num_attention_heads"],
            c.get("num_key_value_heads", c["num_attention_heads"]),
        )
    raise ValueError(
        f"plan: backbone '{name_or_path}' is neither a local folder nor one of the known backbones "
        f"({', '.join(KNOWN_BACKBONES)}); add its shape to llm4rec.estimates.KNOWN_BACKBONES"
    )


@dataclass
class Estimate:
    train_tokens: float = 0.0
    train_flops: float = 0.0
    forward_flops: float = 0.0  # validation and test ranking, prefill and one-forward scoring
    decode_steps: float = 0.0  # sequential decoding forwards (each reads every weight)
    beam_slots: float = 0.0  # live beams summed over the decoding steps (the host side's work)
    weights: float = 0.0  # backbone parameters
    trainable: float = 0.0
    activation_bytes: float = 0.0
    small: bool = False  # a baseline: small matrices, no backbone to load
    layer_passes: float = 0.0  # sequential block forwards (a backward counts 2): the latency floor
    epochs: float = 0.0  # an SFT row's budget in passes over its training windows (0: none)
    # a generative LLM row's shape, which a stage over it (GRPO) reads: its blocks, width, output
    # vocabulary and tokens per item identifier (terminator included)
    layers: int = 0
    hidden: int = 0
    vocab: float = 0.0
    identifier: float = 0.0

    def run_seconds(self, profile: Any) -> float:
        """The run's own time (its train + ranking clocks), without the job's start."""
        if self.small:
            return (self.train_flops + self.forward_flops) / profile.small_flops
        decode = self.decode_steps * self.weights * profile.weight_bytes / profile.bandwidth
        compute = (
            self.train_flops / profile.train_flops
            + self.forward_flops / profile.forward_flops
            + decode
        )
        host = self.beam_slots * profile.host_s_per_beam
        return profile.load_s + max(compute, self.layer_passes * profile.layer_latency_s) + host

    def seconds(self, profile: Any) -> float:
        return profile.startup_s + self.run_seconds(profile)

    def peak_gb(self, profile: Any) -> float:
        return (
            self.weights * profile.weight_bytes + self.trainable * 16 + self.activation_bytes
        ) / 2**30


def lora_params(shape: Shape, lora) -> float:
    if lora is None:
        return 0.0
    sizes = {
        "q_proj": (shape.hidden, shape.hidden),
        "o_proj": (shape.hidden, shape.hidden),
        "k_proj": (shape.hidden, shape.kv_dim),
        "v_proj": (shape.hidden, shape.kv_dim),
        "gate_proj": (shape.hidden, shape.intermediate),
        "up_proj": (shape.hidden, shape.intermediate),
        "down_proj": (shape.intermediate, shape.hidden),
    }
    return shape.layers * sum(
        lora.rank * (a + b) for m, (a, b) in sizes.items() if m in lora.target_modules
    )


ACTIVATION_BYTES = 34  # per token, hidden unit and layer: bf16 activations kept for backward
LAYER_INPUT_BYTES = 2  # per token, hidden unit and layer with checkpointing: its bf16 input


def train_sequences(
    cost, n, trainable, tokens, examples, head=0.0, head_positions=1.0, micro_batches=0.0, layers=0
) -> None:
    """Training on `examples` sequences of `tokens` tokens through `n` parameters (`trainable` of
    them), an output layer of `head` parameters read at `head_positions` per sequence, in
    `micro_batches` passes over `layers` layers (floats, counts of each)."""
    cost.layer_passes += 3 * micro_batches * layers
    cost.train_tokens += examples * tokens
    cost.train_flops += examples * (tokens * (4 * n + 2 * trainable) + head_positions * 6 * head)


def sft_epochs(examples: float, stats: dict[str, float], stride: int = 0, cap=None) -> float:
    """Passes over the training windows that `examples` make: one window per training target
    (sliding windows: text-prompted, LLaRA, E4SRec, the semantic-ID rows) or, with `stride`,
    windows of stride + 1 items (IDIOMoE, E4SRec at every position: about (n - 1) / stride + 1/2
    per user); `cap` (max_train_examples) samples that many."""
    targets = max(stats["train_interactions"] - stats["users"], 1.0)
    windows = targets / stride + stats["users"] / 2 if stride else targets
    return examples / (min(windows, cap) if cap else windows)


def rank_users(
    cost, n, users, prompt_tokens, batch_users, beam=0, steps=0, head=0.0, layers=0
) -> None:
    """Ranking `users`: a prefill each, then `steps` decoding steps of `beam` beams per batch of
    users (or, with `head`, one output layer over the catalogue)."""
    cost.forward_flops += users * (2 * n * prompt_tokens + 2 * head + 2 * n * beam * steps)
    cost.decode_steps += math.ceil(users / batch_users) * steps
    cost.beam_slots += users * beam * steps
    cost.layer_passes += math.ceil(users / batch_users) * (1 + steps) * layers


def combined(a: Estimate, b: Estimate) -> Estimate:
    """Two searches by one job: the work adds up, the model and its peak are one."""
    summed = {
        f: getattr(a, f) + getattr(b, f)
        for f in (
            "train_tokens",
            "train_flops",
            "forward_flops",
            "decode_steps",
            "layer_passes",
            "beam_slots",
        )  # fmt: skip
    }
    return dataclasses.replace(
        a, activation_bytes=max(a.activation_bytes, b.activation_bytes), **summed
    )


def grpo_pass_bytes(
    rows: int,
    tokens: float,
    positions: int,
    hidden: int,
    layers: int,
    vocab: float,
    checkpointing: bool = False,
) -> float:
    """Peak bytes of one GRPO forward + backward pass over `rows` rows (micro_prompts x group_size)
    of `tokens` tokens: the activations kept for backward (every layer's, or with checkpointing
    each layer's input plus one layer's recomputed activations), and the fp32 LM-head logits at
    the `positions` kept per row (`logits_to_keep`), their log-softmax and its gradient (x 3)."""
    kept = (
        tokens
        * hidden
        * (
            layers * LAYER_INPUT_BYTES + ACTIVATION_BYTES
            if checkpointing
            else layers * ACTIVATION_BYTES
        )
    )
    return rows * (kept + positions * vocab * 4 * 3)


@dataclass(frozen=True)
class Cell:
    """What a row's `estimate_cost(config, cell)` reads: the dataset's sizes (`stats`: users,
    items, train_interactions, title_tokens), the users it ranks, its grid entry's inputs, and
    through `estimate` / `params_of` / `inputs_of` the other rows of the same grid and dataset (a
    stage's parent), as `llm4rec.plan` resolves them."""

    model: str
    stats: dict[str, float]
    valid_users: float
    test_users: float
    inputs: dict[str, Any]
    # (model, config or None for its grid params, users_of or None) -> that row's estimate
    estimate: Callable[[str, Any, str | None], Estimate]
    params_of: Callable[[str], Any]  # model -> its checked config on this dataset
    inputs_of: Callable[[str], dict[str, Any]]  # model -> its grid entry's inputs
    artifact_params: Callable[[str, dict], Any] = field(default=lambda name, params: params)

    def code_length(self, model: str | None = None) -> int:
        """Tokens per semantic ID of `model` (this row by default): its code table's levels (3
        unless set) + the disambiguation token."""
        inputs = self.inputs if model is None else self.inputs_of(model)
        return ((inputs.get("codes") or {}).get("params") or {}).get("levels", 3) + 1

    def policy_parent(self) -> str:
        """The row whose exported policy this stage row consumes (its `policy` input)."""
        return self.inputs["policy"]["run"]


def parent_ranking(cell: Cell, config: Any = None) -> tuple[Estimate, Any]:
    """A stage row that ranks with its parent's model and trains nothing (steered, exact,
    cold-start): the parent's estimate with no SFT steps, over this row's users (a request's dozen
    prompt tokens and the cold-start insertion are not counted), and that untrained config (or
    `config`'s changes to it applied, e.g. an exact row's beam)."""
    parent = cell.policy_parent()
    pcfg = cell.params_of(parent)
    untrained = dataclasses.replace(pcfg, sft=dataclasses.replace(pcfg.sft, steps=0))
    return cell.estimate(parent, untrained, cell.model), untrained


@dataclass
class SftBudget:
    """An SFT row's common counts (`sft_budget`)."""

    shape: Shape
    lora: float
    examples: float
    passes: dict[str, float]
    evaluations: int
    trains: bool


def sft_budget(config: Any, cell: Cell, strided: bool = False) -> tuple[Estimate, SftBudget]:
    """An LLM row fine-tuned by SFT on its backbone: a new estimate holding the backbone's
    weights and the epochs its steps make (`strided`: windows of max_history + 1 items), and the
    counts every such row uses."""
    shape = backbone_shape(config.backbone.name_or_path)
    estimate = Estimate(weights=shape.params)
    examples = config.sft.steps * config.sft.batch_size * config.sft.grad_accum
    passes = {"micro_batches": config.sft.steps * config.sft.grad_accum, "layers": shape.layers}
    cap = getattr(config, "max_train_examples", None)
    estimate.epochs = sft_epochs(examples, cell.stats, config.max_history if strided else 0, cap)
    budget = SftBudget(
        shape,
        lora_params(shape, config.lora),
        examples,
        passes,
        config.sft.steps // max(config.eval_every, 1),
        not getattr(config, "zero_shot", False),
    )
    return estimate, budget


def sft_finish(
    estimate: Estimate, budget: SftBudget, trainable: float, prompt: float, width: int, title: float
) -> Estimate:
    """The trainable count, epochs and one micro-batch's activations of an SFT row (none when it
    trains nothing): ~34 bytes per token per hidden unit per layer (bf16 activations kept for
    backward), plus fp32 logits over the vocabulary at the labelled positions."""
    shape = budget.shape
    estimate.trainable = trainable if budget.trains else 0.0
    estimate.epochs = estimate.epochs if budget.trains else 0.0
    tokens = width * (prompt + title)
    estimate.activation_bytes = (
        (
            tokens * shape.hidden * shape.layers * ACTIVATION_BYTES
            + width * (title + 1) * shape.vocab * 4
        )
        if budget.trains
        else 0
    )
    estimate.layers, estimate.hidden, estimate.vocab = shape.layers, shape.hidden, shape.vocab
    return estimate


def baseline_estimate(config: Any, cell: Cell, train_flops: float = 0.0) -> Estimate:
    """A baseline's small matrices: `train_flops`, one score per user and item to rank, and an
    embedding per user and item (`embedding_size` / `hidden_size` of its config, else 64)."""
    if dataclasses.is_dataclass(config):
        config = dataclasses.asdict(config)
    hidden = config.get("embedding_size") or config.get("hidden_size") or 64
    users, items = cell.stats["users"], cell.stats["items"]
    return Estimate(
        train_flops=train_flops,
        forward_flops=2 * users * items * hidden,
        weights=(users + items) * hidden,
        small=True,
    )


def baseline_settings(config: Any) -> dict[str, Any]:
    """A baseline's config as a dict (a dataclass's fields, or RecBole's params)."""
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config or {})


SENTENCE_ENCODER_PARAMS = 22.7e6  # all-MiniLM-L6-v2 (assumed, as its width)
SENTENCE_ENCODER_DIM = 384  # all-MiniLM-L6-v2 (a sentence encoder the plan cannot open: assumed)
TEXT_TOKENS = 48  # an item's text: title, year, genres and a short description (assumed)


# -- the training budget a row declares (a module's `train_budget(hp)`: MLflow's `budget.train`;
# an SFT-trained LLM's: llm4rec.llm.recommender.steps_budget)


def epochs_budget(hp: Mapping[str, Any]) -> str:
    """A row trained for up to `epochs` epochs, stopped early where it has a patience."""
    epochs = f"{hp['epochs']} epoch{'' if hp['epochs'] == 1 else 's'}"
    stops = hp.get("stopping_step") or hp.get("patience")
    return f"{epochs} (max; early stopping)" if stops else epochs
