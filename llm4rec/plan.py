"""`llm4rec plan GRID`: what every cell of a grid will cost, before anyone submits it.

An estimate from the config and the dataset sizes, never from running the model:
- tokens: each paradigm's example length (history items x tokens per item, from the prepared
  catalogue's titles) x optimiser steps x batch; the output layer over the catalogue where a model
  has one; validation rankings during training; the test ranking (a prefill per user, then
  beam x identifier-length decoding steps, or one forward per user);
- FLOPs: 2 per parameter per token forward, 2 more backward through the activations, 2 more for
  the parameters that train (so LoRA costs ~4N a token, full fine-tuning ~6N);
- time under a stated device profile: training and prefill at an effective FLOP rate; a decoding
  step reads every weight once, so it costs at least weights / bandwidth; plus a fixed per-job
  overhead (start, loading, text retention);
- peak memory: weights, fp32 master weights + gradients + Adam moments for what trains (16 bytes a
  parameter), activations and logits of one micro-batch;
- the SLURM resources the grid will request (its `resources`: gpu, mem_mb, runtime).

Profiles: `h100` (the paper grid's machine; throughput stated below) and `cpu2` (this project's
2-core CPU, calibrated on the default grid's measured runs: tests/test_plan.py checks the plan
against them, within 2x per run).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from llm4rec.config import Grid
from llm4rec.models import ARTIFACTS, MODELS, check_params

# a suggested runtime is this many times the estimate (rounded up to 15 min), at least 30 / 60 min
SAFETY = 4


@dataclass(frozen=True)
class Profile:
    name: str
    train_flops: float  # effective FLOP/s of training steps
    forward_flops: (
        float  # effective FLOP/s of batched forward passes (prefill, one-forward scoring)
    )
    bandwidth: float  # bytes/s: a decoding step reads every weight once
    small_flops: (
        float  # effective FLOP/s of the baselines' small matrices (RecBole's embeddings of 64-128)
    )
    startup_s: float  # per job: interpreter and imports (outside the run's own clock)
    # per LLM run: loading the backbone and the text-retention perplexity before and after
    load_s: float
    weight_bytes: int  # bytes per backbone weight (bf16 on the GPU, fp32 on CPU)
    layer_latency_s: float = (
        0.0  # the least time one block's forward takes, however small the batch (kernel launches)
    )
    # the beam search's host side (choosing each step's beams in Python), per live beam and step:
    # synchronous, so it adds to the device's time (benchmarks/perf/beam_step.py measures it)
    host_s_per_beam: float = 0.0


PROFILES = {
    # H100 SXM: 989 TFLOP/s dense bf16 peak, 3.35 TB/s HBM3. Assumed, until
    # benchmarks/perf/gpu_paradigms.py measures them (docs/gpu.md lists what it must confirm):
    # - training at 10% of peak (100 TFLOP/s): a 0.5B model on sequences of 50-200 tokens with LoRA
    #   (small matmuls, the optimiser, Python between micro-batches) stays far from peak;
    # - batched forward passes at 15% (150 TFLOP/s), decoding at 75% of bandwidth;
    # - small matrices (the baselines): 1 TFLOP/s;
    # - 30 s to start a job, 60 s to load a backbone and measure text retention;
    # - eager PyTorch launches ~10 kernels per block at ~20 us each: a block's forward takes at
    #   least 0.2 ms;
    # - the beam search's host side, measured (benchmarks/perf/beam_step.py, 64 users x 50 beams
    #   over Qwen's vocabulary, 2-core Xeon: 9.8 ms a step, vectorised): 3e-6 s per live beam and
    #   step, on a GPU node's CPU as here
    "h100": Profile("H100 SXM (bf16)", 100e12, 150e12, 2.5e12, 1e12, 30.0, 60.0, 2, 0.2e-3, 3e-6),
    # 2 cores (AMD EPYC, AVX-512), fp32, 2 threads; calibrated on the default grid
    # (tests/test_plan.py)
    "cpu2": Profile("2-core CPU (fp32)", 150e9, 150e9, 12e9, 3e9, 10.0, 40.0, 4),
}


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
        f"({', '.join(KNOWN_BACKBONES)}); add its shape to llm4rec.plan.KNOWN_BACKBONES"
    )


@dataclass
class Cost:
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

    def run_seconds(self, profile: Profile) -> float:
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

    def seconds(self, profile: Profile) -> float:
        return profile.startup_s + self.run_seconds(profile)

    def peak_gb(self, profile: Profile) -> float:
        return (
            self.weights * profile.weight_bytes + self.trainable * 16 + self.activation_bytes
        ) / 2**30


def _lora_params(shape: Shape, lora) -> float:
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


def _sequence(
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


def _ranking(
    cost, n, users, prompt_tokens, batch_users, beam=0, steps=0, head=0.0, layers=0
) -> None:
    """Ranking `users`: a prefill each, then `steps` decoding steps of `beam` beams per batch of
    users (or, with `head`, one output layer over the catalogue)."""
    cost.forward_flops += users * (2 * n * prompt_tokens + 2 * head + 2 * n * beam * steps)
    cost.decode_steps += math.ceil(users / batch_users) * steps
    cost.beam_slots += users * beam * steps
    cost.layer_passes += math.ceil(users / batch_users) * (1 + steps) * layers


def cell_cost(
    grid: Grid,
    dataset: str,
    model: str,
    stats: dict[str, float],
    config: Any = None,
    users_of: str | None = None,
) -> Cost:
    """The estimated cost of one run (one seed) of `model` on `dataset` (`config`: other params
    than the grid's; `users_of`: the entry whose evaluation samples it ranks)."""
    spec = MODELS[model]
    stage = {
        "llm4rec.paradigms.steer:build": "steer",
        "llm4rec.paradigms.exact:build": "exact",
        "llm4rec.paradigms.semantic_id.cold_start:build": "cold_start",
    }
    if spec.factory in stage:
        # a steered, exact or cold-start row: its parent's model ranking the row's users, nothing
        # trained (a request's dozen prompt tokens and the cold-start insertion are not counted);
        # an exact row's beam covers the catalogue (and the parent's beam over the same users is
        # searched too: counted)
        parent = grid.model_inputs(model)["policy"]["run"]
        pcfg = check_params(MODELS[parent], grid.model_params(parent, dataset))
        untrained = dataclasses.replace(pcfg, sft=dataclasses.replace(pcfg.sft, steps=0))
        cost = cell_cost(grid, dataset, parent, stats, untrained, users_of=model)
        if stage[spec.factory] == "exact":
            config = check_params(spec, grid.model_params(model, dataset))
            width = config.width or stats["items"]
            exact = dataclasses.replace(untrained, beam_width=width, batch_users=config.batch_users)
            cost = _add(cost, cell_cost(grid, dataset, parent, stats, exact, users_of=model))
        return dataclasses.replace(cost, trainable=0)
    config = config or check_params(spec, grid.model_params(model, dataset))
    evaluation = grid.model_evaluation(users_of or model)
    test_users = min(evaluation.get("test_users") or stats["users"], stats["users"])
    valid_users = min(evaluation.get("valid_users") or stats["users"], stats["users"])
    items, title = stats["items"], stats["title_tokens"]
    cost = Cost()
    if spec.paradigm == "baseline":
        return _baseline_cost(cost, model, config if config is not None else {}, stats)
    if spec.factory == "llm4rec.paradigms.rl:build":
        return _grpo_cost(grid, dataset, model, config, stats, valid_users, test_users)
    family = type(config).__name__
    if family == "AlphaRecConfig":
        return _alpharec_cost(grid, model, config, stats)
    if family in ("RtaConfig", "SteeredRtaConfig"):
        cost = _rta_cost(grid, model, config, stats)
        if family == "SteeredRtaConfig":  # a forward of the frozen LLM per ranked user, at ranking
            states = check_params(
                ARTIFACTS["llm_states"], grid.model_inputs(model)["states"].get("params") or {}
            )
            shape = backbone_shape(states.backbone.name_or_path)
            prompt = 12 + states.window * 12 + 16  # header, titles, the request line
            cost.forward_flops += 2 * shape.params * (test_users + valid_users) * prompt
            cost.small, cost.weights = False, shape.params  # it loads the LLM itself
        return cost
    code = (grid.model_inputs(model).get("codes", {}).get("params") or {}).get(
        "levels", 3
    ) + 1  # + disambiguation
    if family == "TigerConfig":
        t5 = config.t5
        per_layer = 4 * t5.d_model * t5.num_heads * t5.d_kv + 2 * t5.d_model * t5.d_ff
        n = per_layer * (t5.encoder_layers + 1.5 * t5.decoder_layers)  # decoder: + cross-attention
        prompt = config.max_history * code + 2
        cost.weights, cost.trainable = n, n
        cost.epochs = sft_epochs(config.sft.steps * config.sft.batch_size, stats)
        layers = t5.encoder_layers + t5.decoder_layers
        _sequence(
            cost,
            n,
            n,
            prompt + code,
            config.sft.steps * config.sft.batch_size,
            micro_batches=config.sft.steps,
            layers=layers,
        )
        evaluations = config.sft.steps // max(config.eval_every, 1)
        for users in (valid_users * evaluations, test_users + valid_users):
            _ranking(
                cost, n, users, prompt, config.batch_users, config.beam_width, code, layers=layers
            )
        cost.activation_bytes = (
            config.sft.batch_size
            * (prompt + code)
            * t5.d_model
            * 40
            * (t5.encoder_layers + t5.decoder_layers)
        )
        return cost
    shape = backbone_shape(config.backbone.name_or_path)
    n = shape.params
    cost.weights = n
    lora = _lora_params(shape, config.lora)
    examples = config.sft.steps * config.sft.batch_size * config.sft.grad_accum
    passes = {"micro_batches": config.sft.steps * config.sft.grad_accum, "layers": shape.layers}
    strided = family == "IdiomoeConfig" or getattr(config, "loss_positions", "last") == "all"
    cap = getattr(config, "max_train_examples", None)
    cost.epochs = sft_epochs(examples, stats, config.max_history if strided else 0, cap)
    evaluations = config.sft.steps // max(config.eval_every, 1)
    trains = not getattr(config, "zero_shot", False)
    if family in ("TextPromptedConfig", "CfLlaraConfig"):
        soft = 1 if family == "CfLlaraConfig" else 0
        history = config.max_history
        prompt = 40 + history * (title + 1 + soft)
        trainable = lora + (2 * 64 * shape.hidden + shape.hidden**2 if soft else 0)
        if trains:
            _sequence(
                cost,
                n,
                trainable,
                prompt + title + 1,
                examples,
                shape.vocab * shape.hidden,
                title + 1,
                **passes,
            )
        for users in ((valid_users * evaluations if trains else 0), test_users + valid_users):
            beams = (config.beam_width, title + 1)  # beams per user, decoding steps
            _ranking(cost, n, users, prompt, config.batch_users, *beams, layers=shape.layers)
        width = config.sft.batch_size
    elif family == "CfE4SRecConfig":
        head = shape.hidden * items
        prompt = 8 + config.max_history
        positions = config.max_history if config.loss_positions == "all" else 1
        trainable = lora + head + 64 * shape.hidden
        _sequence(cost, n, trainable, prompt, examples, head, positions, **passes)
        for users in (valid_users * evaluations, test_users + valid_users):
            _ranking(cost, n, users, prompt, config.batch_users, head=head, layers=shape.layers)
        width = config.sft.batch_size
    elif family == "IdiomoeConfig":
        from llm4rec.paradigms.idiomoe import expert_layer_indices

        experts = len(expert_layer_indices(config.expert_layers, shape.layers))
        head = shape.hidden * items
        expert = experts * 3 * shape.hidden * shape.intermediate * config.item_expert_width
        trainable = expert + 2 * head + lora
        prompt = 8 + config.max_history
        _sequence(
            cost, n + expert / 2, trainable, prompt, examples, head, config.max_history, **passes
        )
        for users in (valid_users * evaluations, test_users + valid_users):
            _ranking(cost, n, users, prompt, config.batch_users, head=head, layers=shape.layers)
        width = config.sft.batch_size
    elif family == "SidLlmConfig":
        line = code + 1 + (title if config.interleave_titles else 0)
        prompt = 10 + config.max_history * line
        trainable = lora + 4 * code * 32 * shape.hidden
        _sequence(
            cost, n, trainable, prompt + code, examples, shape.vocab * shape.hidden, code, **passes
        )
        for users in (valid_users * evaluations, test_users + valid_users):
            beams = (config.beam_width, code)  # beams per user, decoding steps
            _ranking(cost, n, users, prompt, config.batch_users, *beams, layers=shape.layers)
        width = config.sft.batch_size
    else:
        raise ValueError(
            f"plan: no cost model for {model} ({family}); add one to llm4rec.plan.cell_cost"
        )
    cost.trainable = trainable if trains else 0.0
    cost.epochs = cost.epochs if trains else 0.0
    # one micro-batch: ~34 bytes per token per hidden unit per layer (bf16 activations kept for
    # backward), plus fp32 logits over the vocabulary at the labelled positions
    tokens = width * (prompt + title)
    cost.activation_bytes = (
        (
            tokens * shape.hidden * shape.layers * ACTIVATION_BYTES
            + width * (title + 1) * shape.vocab * 4
        )
        if trains
        else 0
    )
    return cost


def _add(a: Cost, b: Cost) -> Cost:
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


def _grpo_cost(grid, dataset, model, config, stats, valid_users, test_users) -> Cost:
    """An RL stage: its parent's model (size, prompt and identifier length, from the parent's own
    cost); per step, prompts x group completions sampled (or beam-searched) position by position,
    each prompt read once (`PromptStates`: its KV cache or encoder output) and each position feeding
    a row its prefix so far, then teacher-forced through the reference (forward) and the policy
    (forward and backward, per update); validation rankings at the start and every `eval_every`
    steps, and the test ranking with the parent's beam."""
    parent = grid.model_inputs(model)["policy"]["run"]
    pcfg = check_params(MODELS[parent], grid.model_params(parent, dataset))
    sft = cell_cost(grid, dataset, parent, stats)
    examples = max(1, pcfg.sft.steps * pcfg.sft.batch_size * pcfg.sft.grad_accum)
    codes = grid.model_inputs(parent).get("codes")
    ident = (codes.get("params") or {}).get("levels", 3) + 1 if codes else stats["title_tokens"] + 1
    prompt = max(1.0, sft.train_tokens / examples - ident)
    if type(pcfg).__name__ == "TigerConfig":
        layers = pcfg.t5.encoder_layers + pcfg.t5.decoder_layers
        hidden, vocab = (
            pcfg.t5.d_model,
            ident * (codes.get("params") or {}).get("codebook_size", 256),
        )
    else:
        shape = backbone_shape(pcfg.backbone.name_or_path)
        layers, hidden, vocab = shape.layers, shape.hidden, shape.vocab
    n, cost = sft.weights, Cost()
    cost.weights, cost.trainable = n, sft.trainable
    rows = config.steps * config.prompts_per_step * config.group_size
    positions = int(math.ceil(ident))
    micro_rows = (config.micro_prompts or config.prompts_per_step) * config.group_size
    cost.activation_bytes = grpo_pass_bytes(
        micro_rows, prompt + ident, positions + 1, hidden, layers, vocab,
        config.gradient_checkpointing,
    )  # fmt: skip
    cost.forward_flops += config.steps * config.prompts_per_step * 2 * n * prompt
    cost.forward_flops += rows * sum(2 * n * j for j in range(positions))
    cost.layer_passes += config.steps * positions * layers
    cost.beam_slots += rows * positions  # the sampler's host side: every row at every position
    cost.forward_flops += rows * 2 * n * (prompt + ident)  # the reference
    updates = config.steps * config.updates_per_batch
    _sequence(
        cost,
        n,
        sft.trainable,
        prompt + ident,
        rows * config.updates_per_batch,
        micro_batches=updates,
        layers=layers,
    )
    evaluations = config.steps // max(config.eval_every, 1) + 1  # + the parent's, at step 0
    for users in (config.valid_users * evaluations, test_users + valid_users):
        _ranking(
            cost, n, users, prompt, pcfg.batch_users, pcfg.beam_width, positions, layers=layers
        )
    return cost


SENTENCE_ENCODER_DIM = 384  # all-MiniLM-L6-v2 (a sentence encoder the plan cannot open: assumed)


def _rta_cost(grid: Grid, model: str, config, stats: dict[str, float]) -> Cost:
    """Reindex-Then-Adapt: the aggregator over every title per step (3x for the backward) and one
    matmul per ranked user; the frozen LLM's forward per user is the llm_states artifact's row
    (`artifact_cost`), built once for every RTA row."""
    from llm4rec.paradigms.rta import StatesConfig

    params = grid.model_inputs(model)["states"].get("params") or {}
    states = check_params(ARTIFACTS["llm_states"], params)
    assert isinstance(states, StatesConfig)
    shape = backbone_shape(states.backbone.name_or_path)
    title, users, items = 12, stats["users"], stats["items"]  # title tokens + separator
    queries = users * max(states.window - 2, 1)
    aggregate = items * title * shape.hidden + items * shape.hidden**2
    step = 3 * (aggregate + 2 * config.batch_size * min(config.batch_size, items) * shape.hidden)
    steps = (config.epochs + config.adapt.epochs) * math.ceil(queries / config.batch_size)
    ranking = aggregate + 2 * users * items * shape.hidden
    trainable = shape.hidden**2 + shape.hidden + items
    return Cost(
        train_flops=steps * step,
        forward_flops=(config.epochs + config.adapt.epochs + 2) * ranking,
        trainable=trainable,
        small=True,  # the stored states and a d x d map: no backbone loaded
    )


SENTENCE_ENCODER_PARAMS = 22.7e6  # all-MiniLM-L6-v2 (assumed, as its width)
TEXT_TOKENS = 48  # an item's text: title, year, genres and a short description (assumed)


def artifact_cost(name: str, params: Any, stats: dict[str, float]) -> Cost:
    """One artifact job: llm_states, the frozen LLM's forward over each user's last `window`
    titles; item_text_embeddings (and semantic_ids' encoder), one forward per item text through the
    encoder (a backbone, or the sentence encoder); semantic_ids' quantizer and item_text_lsa are
    small matrices over the catalogue (counted as their encoding)."""
    users, items = stats["users"], stats["items"]
    if name == "llm_states":
        shape = backbone_shape(params.backbone.name_or_path)
        tokens = users * (12 + params.window * stats["title_tokens"])
        return Cost(forward_flops=2 * shape.params * tokens, weights=shape.params)
    if name in ("item_text_embeddings", "semantic_ids"):
        encoder = params if name == "item_text_embeddings" else params.encoder
        if encoder.kind == "backbone":
            n = backbone_shape(encoder.model).params
            return Cost(forward_flops=2 * n * items * TEXT_TOKENS, weights=n)
        flops = 2 * SENTENCE_ENCODER_PARAMS * items * TEXT_TOKENS
        return Cost(forward_flops=flops, weights=SENTENCE_ENCODER_PARAMS)
    return Cost(forward_flops=items * 1e6, small=True)  # item_text_lsa: an SVD of the catalogue


def _alpharec_cost(grid: Grid, model: str, config, stats: dict[str, float]) -> Cost:
    """AlphaRec: per step the map over every user and item, the graph layers and the batch's cosines
    against the catalogue (forward + backward: 3x); a validation ranking after every epoch. The
    epochs are early stopping's upper bound; encoding the item texts is the artifact's (once)."""
    encoder = grid.model_inputs(model).get("text", {}).get("params") or {}
    width = (
        backbone_shape(encoder.get("model", "smollm2-135m-instruct")).hidden
        if encoder.get("kind") == "backbone"
        else SENTENCE_ENCODER_DIM
    )
    users, items, pairs = stats["users"], stats["items"], stats["train_interactions"]
    mapped = (
        width * config.mlp_hidden + config.mlp_hidden * config.dim
        if config.mapping == "mlp"
        else width * config.dim
    )
    nodes = users + items
    forward = 2 * nodes * mapped + 4 * config.graph_layers * pairs * config.dim
    batch = min(config.batch_size, pairs)
    step = 3 * (forward + 2 * batch * items * config.dim)
    steps = config.epochs * math.ceil(pairs / config.batch_size)
    ranking = forward + 2 * users * items * config.dim
    # dense matrix products over every node at each step: the dense rates apply, not `small`'s
    return Cost(
        train_flops=steps * step,
        forward_flops=(config.epochs + 2) * ranking,
        weights=mapped,
        trainable=mapped,
    )


def _baseline_cost(cost: Cost, model: str, config: dict, stats: dict[str, float]) -> Cost:
    """RecBole baselines: epochs (early stopping's upper bound) x interactions x per-sample work."""
    if dataclasses.is_dataclass(config):  # the native SASRec (baselines/sasrec.py)
        config = dataclasses.asdict(config)
    hidden = config.get("embedding_size") or config.get("hidden_size") or 64
    epochs = config.get("epochs") or 0
    interactions, items, users = stats["train_interactions"], stats["items"], stats["users"]
    if model in ("sasrec", "sasrec_ce"):
        # each user's sequence once an epoch: about one position per training interaction, a loss
        # at each (ce: over every item; bce: a positive and a negative)
        length = config.get("max_len", 200)
        layer = 12 * hidden * hidden + 2 * min(length, interactions / users) * hidden
        head = hidden * items if config.get("loss") == "ce" else 2 * hidden
        cost.train_flops = epochs * interactions * 6 * (config.get("n_layers", 2) * layer + head)
    elif model == "sasrec_recbole":
        # every prefix one example: a forward over up to `length` positions per interaction
        length = min(config.get("MAX_ITEM_LIST_LENGTH", 50), interactions / users)
        layer = length * (12 * hidden * hidden + 2 * length * hidden)
        per_example = 6 * (config.get("n_layers", 2) * layer + hidden * items)
        cost.train_flops = epochs * interactions * per_example
    elif model == "lightgcn":
        batches = math.ceil(interactions / config.get("train_batch_size", 2048))
        cost.train_flops = epochs * batches * config.get("n_layers", 2) * 6 * interactions * hidden
    elif model == "bpr":
        cost.train_flops = epochs * interactions * 18 * hidden
    cost.forward_flops = 2 * users * items * hidden
    cost.weights = (users + items) * hidden
    cost.small = True
    return cost


def training_flops(grid: Grid, cells: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """(dataset, model) -> the cost model's training FLOPs of one run (the report's learning-curve
    figure), for the cells of the grid whose split is prepared; a cell the model cannot cost is
    left out."""
    from llm4rec.data.split import read_split

    out, stats_of = {}, {}
    for dataset, model in cells:
        if model not in grid.models or not (grid.split_dir(dataset) / "split.json").is_file():
            continue
        if dataset not in stats_of:
            stats_of[dataset] = dataset_stats(grid, dataset, read_split(grid.split_dir(dataset)))
        try:
            out[(dataset, model)] = cell_cost(grid, dataset, model, stats_of[dataset]).train_flops
        except (KeyError, ValueError):
            continue
    return out


def dataset_stats(grid: Grid, dataset: str, split=None) -> dict[str, float]:
    """Sizes the plan needs, from the prepared split (prepared here when it is not yet)."""
    from llm4rec.runner import prepare_dataset

    split = split or prepare_dataset(grid, dataset)
    stats = split.meta["stats"]
    titles = split.items["title"].astype(str) + (
        " (" + split.items["year"].astype(str) + ")" if "year" in split.items else ""
    )
    return {
        "users": stats["users"],
        "items": stats["items"],
        "train_interactions": stats["train_interactions"],
        "title_tokens": float(titles.str.split().str.len().mean() * 1.6 + 2),
    }  # ~1.6 tokens a word, plus the year


def plan(grid: Grid, profile: str = "h100") -> pd.DataFrame:
    """One row per (dataset, model): estimated minutes, tokens, peak memory per run, the run count,
    GPU-hours, and the resources the grid requests."""
    chosen = PROFILES[profile]
    rows = []
    sources = grid.source_runs()  # a `role: source` dataset runs only what is transferred from it
    cells = [
        (d, m, len(grid.model_seeds(m)))
        for d in grid.evaluated_datasets
        for m in grid.models
        if d in grid.model_datasets(m)
    ]
    for dataset, model in sorted({(d, m) for d, m, _ in sources}):
        cells.append((dataset, model, sum(1 for d, m, _ in sources if (d, m) == (dataset, model))))
    stats_of: dict[str, dict[str, float]] = {}
    for dataset, model, runs in cells:
        if dataset not in stats_of:
            stats_of[dataset] = dataset_stats(grid, dataset)
        stats = stats_of[dataset]
        cost = cell_cost(grid, dataset, model, stats)
        seconds = cost.seconds(chosen)
        resources = grid.model_entry(model).get("resources", {})
        floor = (
            30 if MODELS[model].paradigm == "baseline" else 60
        )  # an LLM job's first run may download its backbone
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "paradigm": MODELS[model].paradigm,
                "runs": runs,
                "train_tokens_M": cost.train_tokens / 1e6,
                "train_PFLOP": cost.train_flops / 1e15,
                "rank_PFLOP": cost.forward_flops / 1e15,
                "minutes_per_run": seconds / 60,
                "epochs": cost.epochs,
                "peak_GiB": cost.peak_gb(chosen),
                "device_hours": runs * seconds / 3600,
                "gpu": resources.get("gpu", 0),
                "mem_mb": resources.get("mem_mb", 4000),
                "runtime_min": resources.get("runtime", 120),
                "runtime_suggested_min": max(floor, math.ceil(SAFETY * seconds / 60 / 15) * 15),
            }
        )
    for (dataset, name, key), source in sorted(grid.artifacts().items()):
        if dataset not in stats_of:
            stats_of[dataset] = dataset_stats(grid, dataset)
        cost = artifact_cost(name, check_params(ARTIFACTS[name], source.params), stats_of[dataset])
        seconds = cost.seconds(chosen)
        resources = grid.artifact_resources(dataset, name, key)
        rows.append(
            {
                "dataset": dataset,
                "model": f"artifact {name} ({key[:8]})",
                "paradigm": "artifact",
                "runs": 1,
                "train_tokens_M": 0.0,
                "train_PFLOP": 0.0,
                "rank_PFLOP": cost.forward_flops / 1e15,
                "minutes_per_run": seconds / 60,
                "epochs": 0.0,
                "peak_GiB": cost.peak_gb(chosen),
                "device_hours": seconds / 3600,
                "gpu": resources["gpu"],
                "mem_mb": resources["mem_mb"],
                "runtime_min": resources["runtime"],
                "runtime_suggested_min": max(30, math.ceil(SAFETY * seconds / 60 / 15) * 15),
            }
        )
    return pd.DataFrame(rows)


def render_plan(frame: pd.DataFrame, profile: str) -> str:
    chosen = PROFILES[profile]
    lines = [
        "| dataset | model | runs | train tokens | epochs | min / run | peak GiB | device-h | "
        "requests (gpu, mem, runtime) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in frame.itertuples():
        short = (
            f" (!: suggested {r.runtime_suggested_min})"
            if r.runtime_min < r.runtime_suggested_min
            else ""
        )
        epochs = f"{r.epochs:.2f}" if r.epochs else "–"
        lines.append(
            f"| {r.dataset} | {r.model} | {r.runs} | {r.train_tokens_M:.1f}M | {epochs} | "
            f"{r.minutes_per_run:.1f} | {r.peak_GiB:.1f} | {r.device_hours:.2f} | {r.gpu}, "
            f"{r.mem_mb} MB, {r.runtime_min} min{short} |"
        )
    total = frame["device_hours"].sum()
    gpu = frame.loc[frame["gpu"] > 0, "device_hours"].sum()
    lines += [
        "",
        f"Total: {total:.1f} device-hours on {chosen.name} ({gpu:.1f} of them in jobs that "
        f"request a GPU), {int(frame['runs'].sum())} runs. Assumed: {chosen.train_flops / 1e12:g} "
        f"TFLOP/s in training, {chosen.forward_flops / 1e12:g} TFLOP/s in forward passes, "
        f"{chosen.bandwidth / 1e12:g} TB/s of weight reads per decoding step, "
        f"{chosen.small_flops / 1e12:g} TFLOP/s for the baselines' small matrices; "
        f"{chosen.startup_s:.0f} s to start a job, {chosen.load_s:.0f} s to load a backbone and "
        f"measure text retention; {chosen.host_s_per_beam * 1e6:g} us of host time per live beam "
        "and decoding step (the beam search's Python side, measured by "
        "benchmarks/perf/beam_step.py). Artifacts are rows of their own (`artifact NAME (key)`), "
        "built once for the runs that read them. Not counted: evaluation and tracking jobs "
        "(seconds each). (!): the requested runtime is under the suggested one "
        f"({SAFETY}x the estimate, at least 30 min, 60 for an LLM run).",
    ]
    return "\n".join(lines) + "\n"


def describe(profile: str) -> dict[str, Any]:
    p = PROFILES[profile]
    return {
        "profile": p.name,
        "train_flops": p.train_flops,
        "forward_flops": p.forward_flops,
        "bandwidth": p.bandwidth,
    }
