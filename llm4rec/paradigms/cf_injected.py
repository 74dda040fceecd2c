"""CF-injected paradigm: the item embeddings of a finished collaborative-filtering run (SASRec by
default, BPR or LightGCN by the grid's `inputs: {cf_source: {run: ...}}`), frozen, projected into
the LLM's embedding space and placed in the prompt as soft tokens.

- `cf_llara` (LLaRA, Liao et al., SIGIR 2024): each history item is its title followed by one soft
  token, projected by LLaRA's MLP (Linear d_cf -> hidden, GELU, Linear hidden -> hidden). The answer
  is the next item's title under `text_prompted`'s catalogue-constrained beam search, so the only
  difference from `text_prompted` is the injected signal. LLaRA's setup by default: its curriculum
  (`curriculum_steps`, default the whole SFT budget: text-only prompts first, the share of hybrid
  prompts growing to 1; 0 turns it off) and LoRA on every projection (attention and MLP).
- `cf_e4srec` (E4SRec, Li et al., 2023): history items are soft tokens only, each its CF embedding
  through one linear layer, between an instruction and an answer prefix; the last hidden state goes
  through a trained output layer over every catalogue item (a plain `Linear(hidden, n_items,
  bias=False)`, cross-entropy on the one label after the answer prefix), so ranking is one forward
  pass per batch of users over the full catalogue. `cf_e4srec_allpos` is the harness's variant: the
  next-item loss at every history position (no answer prefix) and a log-popularity item bias over
  a zero-initialised layer.
- `*_permuted` (the ablation asked by Reindex-Then-Adapt, WSDM 2025: do LLMs use CF signal at all?):
  item i's soft token carries the embedding of item p(i), p a fixed random cyclic permutation of the
  catalogue: the same vectors, the wrong identities.

What trains: the projector (and E4SRec's output layer) and LoRA; the CF embeddings stay frozen (a
non-persistent buffer). The LLM layer supplies the rest: soft tokens via `inputs_embeds`
(`llm4rec.llm.tokens.prompt_embeddings`), the SFT loop, checkpoint selection, constrained decoding
and one-forward catalogue scoring (`llm4rec.llm.item_scoring`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, rank_users, sft_budget, sft_finish, train_sequences
from llm4rec.llm import precision
from llm4rec.llm.backbone import ALL_PROJECTIONS, LoraSettings
from llm4rec.llm.decoding import _decoder_stack, _positions
from llm4rec.llm.item_scoring import log_popularity_prior, top_unseen_items
from llm4rec.llm.prompts import (
    SOFT_SLOT,
    Prompt,
    PromptTemplate,
    plain_prompt,
    render_prompt,
    soft_slot_ids,
)
from llm4rec.llm.recommender import Blocked, LLMConfig, LLMRecommender, Ranked, steps_budget
from llm4rec.llm.tokens import prompt_embeddings
from llm4rec.llm.training import (
    collate,
    encode_example,
    labelled_token_loss,
    token_array,
    training_windows,
)
from llm4rec.models import BuildSpec, ResolvedInput
from llm4rec.paradigms.text_prompted import (
    TextPromptedConfig,
    TextPromptedRecommender,
    prompted_estimate,
)

CF_FILE = "item_embeddings.npy"


@dataclass(frozen=True)
class CfSettings:
    projector: str = "mlp"  # mlp (LLaRA: Linear, GELU, Linear) | linear (E4SRec: one Linear)
    permuted: bool = False  # the ablation: each item's soft token carries another item's embedding
    permutation_seed: int = 0  # the fixed permutation (the same for every run seed)


def catalogue_derangement(n: int, seed: int) -> np.ndarray:
    """A random permutation of range(n) with no fixed point (Sattolo's algorithm: a uniformly random
    n-cycle), so no item keeps its own embedding in the permuted ablation."""
    if n < 2:
        raise ValueError(f"a catalogue of {n} item(s) cannot be permuted without fixed points")
    rng = np.random.default_rng(seed)
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))  # j < i: the cycle never closes early
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def load_cf_table(source: ResolvedInput, split: Split, consumer: str) -> np.ndarray:
    """The consumed item embeddings ([n_items, d_cf], rows in items.parquet order), checked against
    this run's catalogue; a mismatch names both runs."""
    path = source.paths[CF_FILE]
    table = np.load(path)
    if table.ndim != 2 or table.shape[0] != len(split.items):
        raise ValueError(
            f"{consumer}: {path} (from {source.source}) has shape {table.shape}, but this run's "
            f"catalogue (items.parquet) has {len(split.items)} items: the source was trained on "
            "another catalogue; rerun it on this split"
        )
    if not np.isfinite(table).all():
        raise ValueError(
            f"{consumer}: {path} (from {source.source}) contains NaN or infinite values"
        )
    return table.astype(np.float32)


class CfProjector(nn.Module):
    """Frozen CF item embeddings (a buffer, not a parameter) -> the backbone's hidden size."""

    def __init__(self, table: torch.Tensor, hidden: int, kind: str):
        super().__init__()
        self.register_buffer("table", table, persistent=False)
        d_cf = table.shape[1]
        if kind == "mlp":
            self.net = nn.Sequential(nn.Linear(d_cf, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        elif kind == "linear":
            self.net = nn.Linear(d_cf, hidden)
        else:
            raise ValueError(f"cf.projector '{kind}' is not mlp or linear")

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.net(self.table[rows])


def attach_projector(
    model, split: Split, source: ResolvedInput, settings: CfSettings, consumer: str, seed: int
) -> tuple[CfProjector, dict[str, Any]]:
    """Load (and, for the ablation, permute) the CF table and hang its projector on the backbone, so
    it trains, checkpoints and restores with the model's other trainable parameters."""
    table = load_cf_table(source, split, consumer)
    permutation = (
        catalogue_derangement(len(table), settings.permutation_seed) if settings.permuted else None
    )
    if permutation is not None:
        table = table[permutation]  # item i now reads the embedding of item permutation[i]
    base = _decoder_stack(model)
    torch.manual_seed(seed)  # the projector's initialisation follows the run's seed
    projector = CfProjector(torch.from_numpy(table), base.config.hidden_size, settings.projector)
    base.cf_projector = projector.to(base.device)  # fp32 as it trains (llm4rec.llm.precision)
    info = {
        "cf_source": source.source,
        "cf_dim": int(table.shape[1]),
        "cf_projector": settings.projector,
        "cf_permuted": settings.permuted,
        "cf_table_norm": float(np.linalg.norm(table, axis=1).mean()),
    }
    return base.cf_projector, info


def _soft_vectors(
    projector: CfProjector, examples: Sequence[tuple[list[int], list[int]]]
) -> dict[int, dict[int, torch.Tensor]]:
    """{row: {position: projected vector}} for (positions, item rows) per example, in one call."""
    rows = [r for _, item_rows in examples for r in item_rows]
    if not rows:
        return {}
    vectors = projector(torch.as_tensor(rows, device=projector.table.device))
    soft, used = {}, 0
    for row, (positions, item_rows) in enumerate(examples):
        if positions:
            soft[row] = dict(zip(positions, vectors[used : used + len(item_rows)], strict=True))
            used += len(item_rows)
    return soft


def soft_prompt(
    projector: CfProjector, ids: list[int], positions: list[int], rows: list[int]
) -> Prompt:
    """A prompt whose soft tokens at `positions` are the projected CF embeddings of items `rows`."""
    vectors = projector(torch.as_tensor(rows, device=projector.table.device)) if rows else []
    return Prompt(ids, dict(zip(positions, vectors, strict=True)))


# -- LLaRA: titles + one soft token each, constrained title decoding ------------------------------


@dataclass(frozen=True)
class CfLlaraConfig(TextPromptedConfig):
    cf: CfSettings = field(default_factory=CfSettings)
    # LLaRA's curriculum: the hybrid prompts' share grows 0 -> 1 over these steps (None: all of
    # sft.steps; 0: off)
    curriculum_steps: int | None = None
    lora: LoraSettings | None = field(
        default_factory=lambda: LoraSettings(target_modules=list(ALL_PROJECTIONS))
    )

    @property
    def curriculum_length(self) -> int:
        return self.sft.steps if self.curriculum_steps is None else self.curriculum_steps


class CfLlaraRecommender(TextPromptedRecommender):
    cfg: CfLlaraConfig

    def __init__(
        self,
        cfg: CfLlaraConfig,
        seed: int,
        device: str,
        selection: str,
        inputs: Mapping[str, ResolvedInput],
    ):
        if cfg.zero_shot:
            raise ValueError(
                "cf_llara: zero_shot is not meaningful (the CF projector would be untrained)"
            )
        super().__init__(cfg, seed, device, selection, {"cf_source": inputs["cf_source"]})

    def prepare(self, split: Split) -> dict[str, Any]:
        info = super().prepare(split)
        bad = [i for i, title in self.identifiers.items() if SOFT_SLOT in title]
        if bad:
            raise ValueError(
                f"cf_llara: item '{bad[0]}' has the soft-token marker U+E000 in its title"
            )
        self.row = {item: i for i, item in enumerate(split.items["item_id"].astype(str))}
        self.projector, cf_info = attach_projector(
            self.model, split, self.inputs["cf_source"], self.cfg.cf, "cf_llara", self.seed
        )
        return info | cf_info | {"curriculum_steps": self.cfg.curriculum_length}

    def trainable(self) -> None:
        self.projector.requires_grad_(True)

    def hybrid_prompt(
        self, history: Sequence[str], request: str = ""
    ) -> tuple[list[int], list[int], list[int]]:
        """(ids, soft-token positions, their CF rows): each history line is "title <soft>"; a
        request ends the user message (text_prompted's)."""
        items = list(history)[-self.cfg.max_history :]
        text = render_prompt(
            self.cfg.prompt,
            [f"{self.identifiers[i]} {SOFT_SLOT}" for i in items],
            self.tokenizer,
            self.request_sentence(request),
        )
        ids, positions = soft_slot_ids(self.tokenizer, text, self.tokenizer.pad_token_id)
        if len(positions) != len(items):
            raise ValueError(
                f"cf_llara: the prompt template's history line must hold {{title}} once "
                f"(found {len(positions)} soft slots for {len(items)} items)"
            )
        return ids, positions, [self.row[i] for i in items]

    def prompt(self, history: Sequence[str], request: str = "") -> Prompt:
        return soft_prompt(self.projector, *self.hybrid_prompt(history, request))

    def training_examples(self, split: Split, rng: np.random.Generator) -> list[tuple]:
        """Per next-item window: the hybrid (ids, labels, soft positions, CF rows) and, under a
        curriculum, the text-only (ids, labels) of the same window (`text_prompted`'s prompt)."""
        examples, requests = [], self.training_requests(split)
        for _, history, target in training_windows(
            split, self.cfg.max_history, self.cfg.max_train_examples, rng
        ):
            request = requests(target)
            ids, positions, rows = self.hybrid_prompt(history, request)
            text = (
                encode_example(super().prompt(history, request).ids, self.sequences[target])
                if self.cfg.curriculum_length
                else None
            )
            examples.append((*encode_example(ids, self.sequences[target]), positions, rows, text))
        return examples

    def hybrid_share(self, step: int) -> float:
        return (
            1.0 if not self.cfg.curriculum_length else min(1.0, step / self.cfg.curriculum_length)
        )

    def training_loss(self):
        pad, device = self.tokenizer.pad_token_id, self.device

        def loss(model, examples: list, step: int) -> tuple[torch.Tensor, int]:
            # which examples are hybrid: seeded by (run seed, step), so a resumed run draws the same
            hybrid = np.random.default_rng([self.seed, step]).random(
                len(examples)
            ) < self.hybrid_share(step)
            encoded = [(e[0], e[1]) if h else e[4] for e, h in zip(examples, hybrid, strict=True)]
            batch = collate(encoded, pad, device)
            soft = _soft_vectors(
                self.projector,
                [(e[2], e[3]) if h else ([], []) for e, h in zip(examples, hybrid, strict=True)],
            )
            embeds = prompt_embeddings(model, batch["input_ids"], soft)
            mask = batch["attention_mask"]
            loss = labelled_token_loss(
                model, batch["labels"], inputs_embeds=embeds, attention_mask=mask
            )
            return loss, int(mask.sum())

        return loss


# -- E4SRec: soft tokens only, an output layer over the catalogue ----------------------------------


@dataclass(frozen=True)
class CfE4SRecConfig(LLMConfig):
    cf: CfSettings = field(default_factory=lambda: CfSettings(projector="linear"))
    # the history is one soft token per item ({item}); the output layer reads the last hidden
    # state, after the answer prefix
    prompt: PromptTemplate = plain_prompt(
        "Given a user's items, oldest first, predict the next item.{history}",
        answer_prefix="Next item:",
    )
    max_history: int = 20
    # last (E4SRec: the end of the prompt) | all (also every history position, SASRec-like)
    loss_positions: str = "last"
    # E4SRec: none | a learned per-item bias: log_popularity (log training counts) | zero
    item_bias: str = "none"
    # E4SRec: random (nn.Linear's default) | zero: the untrained layer ranks by the bias alone
    head_init: str = "random"

    def __post_init__(self) -> None:
        self.prompt.check(("item",), chat=False, bare=True)


class ItemHead(nn.Module):
    """E4SRec's prediction layer: hidden state -> a logit per catalogue item (+ a per-item bias)."""

    def __init__(self, hidden: int, n_items: int, prior: torch.Tensor | None, init: str):
        super().__init__()
        self.linear = nn.Linear(hidden, n_items, bias=False)
        if init == "zero":
            nn.init.zeros_(self.linear.weight)
        elif init != "random":
            raise ValueError(f"cf_e4srec: head_init '{init}' is not zero or random")
        self.bias = nn.Parameter(prior) if prior is not None else None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits with autocast off (llm4rec.llm.precision: bf16 would tie the top 50)."""
        return precision.fp32_linear(hidden, self.linear.weight, self.bias)


class CfE4SRecRecommender(LLMRecommender):
    reads_requests = True  # a request follows the prompt's head, before the soft tokens
    exports_policy = True  # a steered row restores it (llm4rec.paradigms.steered)
    cfg: CfE4SRecConfig
    one_forward = True  # one forward pass over item tokens per batch of users (no beams)

    def __init__(
        self,
        cfg: CfE4SRecConfig,
        seed: int,
        device: str,
        selection: str,
        inputs: Mapping[str, ResolvedInput],
    ):
        if cfg.loss_positions not in ("last", "all"):
            raise ValueError(f"cf_e4srec: loss_positions '{cfg.loss_positions}' is not last or all")
        if cfg.item_bias not in ("log_popularity", "zero", "none"):
            raise ValueError(
                f"cf_e4srec: item_bias '{cfg.item_bias}' is not log_popularity, zero or none"
            )
        super().__init__(cfg, seed, device, selection, {"cf_source": inputs["cf_source"]})

    def prepare(self, split: Split) -> dict[str, Any]:
        self.items = split.items["item_id"].astype(str).tolist()
        self.index = {item: i for i, item in enumerate(self.items)}
        self.projector, info = attach_projector(
            self.model, split, self.inputs["cf_source"], self.cfg.cf, "cf_e4srec", self.seed
        )
        base = _decoder_stack(self.model)
        prior = {
            "log_popularity": log_popularity_prior(split, self.items),
            "zero": torch.zeros(len(self.items)),
            "none": None,
        }[self.cfg.item_bias]
        base.cf_head = ItemHead(base.config.hidden_size, len(self.items), prior, self.cfg.head_init)
        self.head = base.cf_head.to(base.device)  # fp32 as it trains (llm4rec.llm.precision)

        def tokens(text: str) -> list[int]:
            return self.tokenizer(text, add_special_tokens=False).input_ids if text else []

        self.prompt_head, self.prompt_tail = (tokens(t) for t in self.cfg.prompt.around_history())
        return info | {
            "loss_positions": self.cfg.loss_positions,
            "item_bias": self.cfg.item_bias,
            "head_init": self.cfg.head_init,
        }

    def trainable(self) -> None:
        self.projector.requires_grad_(True)
        self.head.requires_grad_(True)

    def layout(
        self, history: Sequence[str], request: str = ""
    ) -> tuple[list[int], list[int], list[int]]:
        """(ids with placeholders, soft positions, CF rows): the prompt's head (then the request,
        when there is one), a soft token per history item, the tail."""
        rows = [self.index[i] for i in list(history)[-self.cfg.max_history :]]
        placeholder = self.tokenizer.pad_token_id
        head = self.prompt_head + self.request_ids(request)
        positions = list(range(len(head), len(head) + len(rows)))
        return head + [placeholder] * len(rows) + self.prompt_tail, positions, rows

    def prompt(self, history: Sequence[str], request: str = "") -> Prompt:
        return soft_prompt(self.projector, *self.layout(history, request))

    def training_examples(self, split: Split, rng: np.random.Generator) -> list[tuple]:
        """(ids, targets per position (catalogue index or -100), soft positions, CF rows).
        last: every next-item window of the training split (`training_windows`), the target at the
        prompt's end. all: windows of max_history + 1 items (stride max_history); each history
        position also predicts the item after it."""
        n, examples = self.cfg.max_history, []
        if self.cfg.loss_positions == "last":
            windows = [
                (history, target)
                for _, history, target in training_windows(
                    split, n, self.cfg.max_train_examples, rng
                )
            ]
        else:
            windows = []
            for _, group in split.phase("train").groupby("user_id")["item_id"]:
                items = group.astype(str).tolist()
                windows += [
                    (items[max(0, end - n - 1) : end - 1], items[end - 1])
                    for end in range(len(items), 1, -n)
                ]
            cap = self.cfg.max_train_examples
            if cap and len(windows) > cap:
                windows = [windows[i] for i in sorted(rng.choice(len(windows), cap, replace=False))]
        requests = self.training_requests(split)
        for history, target in windows:
            request = requests(target)
            ids, positions, rows = self.layout(history, request)
            targets = [-100] * len(ids)
            targets[-1] = self.index[target]
            # a window with a request supervises only the position the request describes (its
            # target): at an earlier position the request would describe another item
            if self.cfg.loss_positions == "all" and not (request and self.supervises_described()):
                for position, following in zip(positions[:-1], rows[1:], strict=True):
                    targets[position] = following
            examples.append((token_array(ids), token_array(targets), positions, rows))
        return examples

    def item_logits(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        embeds: torch.Tensor,
        where: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Catalogue logits at the positions `where` selects ([B, T] bool), else each row's last."""
        base = _decoder_stack(self.model)
        hidden = base.model(
            inputs_embeds=embeds, attention_mask=mask, position_ids=_positions(mask)
        ).last_hidden_state
        return self.head(hidden[where] if where is not None else hidden[:, -1])

    def training_loss(self):
        pad, device = self.tokenizer.pad_token_id, self.device

        def loss(model, examples: list, step: int) -> tuple[torch.Tensor, int]:
            # right-padded
            batch = collate([(ids, targets) for ids, targets, _, _ in examples], pad, device)
            embeds = prompt_embeddings(
                model, batch["input_ids"], _soft_vectors(self.projector, [e[2:] for e in examples])
            )
            targets = batch["labels"]
            logits = self.item_logits(
                batch["input_ids"], batch["attention_mask"], embeds, where=targets != -100
            )
            return nn.functional.cross_entropy(logits.float(), targets[targets != -100]), int(
                batch["attention_mask"].sum()
            )

        return loss

    def decode(
        self, ids: Tensor, mask: Tensor, inputs_embeds: Tensor | None, histories: Blocked, k: int
    ) -> Ranked:
        embeds = (
            inputs_embeds if inputs_embeds is not None else prompt_embeddings(self.model, ids, {})
        )
        # left-padded: the last column is every prompt's end
        logits = self.item_logits(ids, mask, embeds)
        return top_unseen_items(
            logits, histories, self.index, self.items, k, self.decode_stats, mask
        )


def build(spec: BuildSpec) -> LLMRecommender:
    """cf_llara / cf_e4srec and their variants (llm4rec.models): the `_permuted` ablations
    (cf.permuted: the soft tokens of other items) and cf_e4srec_allpos."""
    model = CfE4SRecRecommender if isinstance(spec.config, CfE4SRecConfig) else CfLlaraRecommender
    return model(spec.config, spec.seed, spec.device, spec.selection, spec.inputs)


train_budget = steps_budget  # MLflow's budget.train


def estimate_cost(config: CfLlaraConfig | CfE4SRecConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`. LLaRA: text_prompted's prompt with a soft token per title (+ the
    projector). E4SRec: a soft token per item and an output layer over the catalogue, read at the
    prompt's end (or at every position), one forward per ranked user."""
    if isinstance(config, CfLlaraConfig):
        return prompted_estimate(config, cell, soft=1)
    estimate, budget = sft_budget(config, cell, strided=config.loss_positions == "all")
    shape, n = budget.shape, budget.shape.params
    head = shape.hidden * cell.stats["items"]
    prompt = 8 + config.max_history
    positions = config.max_history if config.loss_positions == "all" else 1
    trainable = budget.lora + head + 64 * shape.hidden
    train_sequences(
        estimate, n, trainable, prompt, budget.examples, head, positions, **budget.passes
    )
    for users in (cell.valid_users * budget.evaluations, cell.test_users + cell.valid_users):
        rank_users(estimate, n, users, prompt, config.batch_users, head=head, layers=shape.layers)
    title = cell.stats["title_tokens"]
    return sft_finish(estimate, budget, trainable, prompt, config.sft.batch_size, title)
