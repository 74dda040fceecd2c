"""MoE-expert paradigm: IDIOMoE ("Catalog-Native LLM: Speaking Item-ID Dialect with Less
Entanglement for Recommendation", ICLR 2026), on any Llama / Qwen2 / Mistral causal LM.

Items are a dialect of their own: every catalogue item is one new token (ids after the text
vocabulary) and a user's history is an instruction followed by item tokens. In the chosen
blocks the feed-forward network is split in two experts with routing fixed by token type: the
pretrained FFN (text expert, frozen) serves text tokens, a second FFN (item expert, initialised
from the text expert's rows, optionally narrower) serves item tokens; attention is shared. The
output side is a softmax restricted to the item tokens, so ranking is one forward pass per user
and a `topk` over the catalogue minus the history. By default, as in the paper, that softmax
reads the item tokens' input embeddings (`item_head: tied`) with no bias (`item_bias: none`).
`idiomoe_popprior` is the harness's variant: output vectors of their own starting at zero
(`item_head: untied`) over a learned per-item bias starting at log(1 + training count)
(`item_bias: log_popularity`), so step 0 ranks as MostPop.

By default only the item embeddings and the item experts train, so a text-only input gives
exactly the untouched backbone's logits, before and after training (tested): the method's
promise. Options: a learned two-way gate per token instead of fixed routing; LoRA on attention
(`lora`); no expert split at all (`expert_layers: none` with LoRA on the MLP: the entangled
model the paper argues against).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, rank_users, sft_budget, sft_finish, train_sequences
from llm4rec.llm import precision
from llm4rec.llm.backbone import LoraSettings
from llm4rec.llm.decoding import _decoder_stack
from llm4rec.llm.item_scoring import log_popularity_prior, top_unseen_items
from llm4rec.llm.prompts import Prompt, PromptTemplate, plain_prompt
from llm4rec.llm.recommender import Blocked, LLMConfig, LLMRecommender, Ranked, steps_budget
from llm4rec.llm.training import token_array
from llm4rec.models import BuildSpec

# decoder layers at model.model.layers, each with a gated `mlp`
SUPPORTED = (
    "llama",
    "qwen2",
    "mistral",
)


@dataclass(frozen=True)
class IdiomoeConfig(LLMConfig):
    lora: LoraSettings | None = None  # attention LoRA off: the text side stays exactly the backbone
    expert_layers: str | list[int] = (
        "last_8"  # all | none | last_N | [indices] (the paper's ablation: last 8 best)
    )
    item_expert_width: float = (
        1.0  # 1 | 0.5 | 0.25 of the text FFN's width (the paper's shrink factors)
    )
    routing: str = "token_type"  # token_type (fixed) | learned (a two-way gate per token)
    item_init: str = (
        "title_mean"  # title_mean (mean backbone embedding of the title's tokens) | random
    )
    # an instruction, then one item token per history item ({item}); nothing after the last one
    # (every item position predicts the next item)
    prompt: PromptTemplate = plain_prompt("A user's items, oldest first:{history}")
    max_history: int = 20  # items per training window and per ranking prompt
    loss_positions: str = "all"  # all: next-item loss at every item position (SASRec-like) | last
    # the item softmax's vectors: tied (the input item embeddings; the paper) | untied (their own,
    # starting at zero)
    item_head: str = "tied"
    # its learned per-item bias: none (the paper) | log_popularity (starts at log(1 + training
    # count)) | zero
    item_bias: str = "none"

    def __post_init__(self) -> None:
        # every item position predicts the next item, the last one included
        self.prompt.check(("item",), chat=False, bare=True, tail=False)


class TokenTypes:
    """Which positions of the current forward pass are item tokens; set by the embedding layer,
    read by every expert layer of the same pass."""

    def __init__(self, first_item_id: int):
        self.first_item_id = first_item_id
        self.items: torch.Tensor | None = None  # [B, T] bool
        # the flattened [B * T] positions of each type, found once per pass (one host sync, where
        # a boolean mask in every block would sync in every block)
        self.item_rows: torch.Tensor | None = None
        self.text_rows: torch.Tensor | None = None

    def set(self, is_item: torch.Tensor) -> None:
        flat = is_item.reshape(-1)
        self.items = is_item
        self.item_rows = flat.nonzero().squeeze(1)
        self.text_rows = (~flat).nonzero().squeeze(1)


class CatalogueEmbedding(nn.Module):
    """The frozen text embedding for ids below `first_item_id`, a trainable item embedding above."""

    def __init__(self, text: nn.Embedding, items: torch.Tensor, types: TokenTypes):
        super().__init__()
        self.text, self.types = text, types
        self.items = nn.Parameter(items)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        is_item = ids >= self.types.first_item_id
        self.types.set(is_item)
        out = self.text(ids.masked_fill(is_item, 0))
        rows = self.types.item_rows
        if len(rows):
            flat = ids.reshape(-1).index_select(0, rows) - self.types.first_item_id
            vectors = self.items.index_select(0, flat).to(out.dtype)
            out = out.reshape(-1, out.shape[-1]).index_copy(0, rows, vectors).view_as(out)
        return out


class TokenTypeExperts(nn.Module):
    """Two FFN experts in place of one block's MLP: text tokens through `text`, item tokens
    through `item` (fixed routing), or a learned per-token mix of both (`gate`)."""

    def __init__(self, text: nn.Module, item: nn.Module, types: TokenTypes, learned: bool = False):
        super().__init__()
        self.text, self.item, self.types = text, item, types
        self.gate = nn.Linear(text.gate_proj.in_features, 1) if learned else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate is not None:
            share = torch.sigmoid(self.gate(x))
            return share * self.item(x) + (1 - share) * self.text(x)
        items = self.types.items
        if items is None or items.shape != x.shape[:2]:
            raise RuntimeError(
                "IDIOMoE routing needs the token types of this forward pass (input ids, not "
                "embeddings)"
            )
        item_rows, text_rows = self.types.item_rows, self.types.text_rows
        if not len(item_rows):
            return self.text(x)  # text only: exactly the backbone's computation
        flat = x.reshape(-1, x.shape[-1])
        out = torch.empty_like(flat)
        out.index_copy_(0, text_rows, self.text(flat.index_select(0, text_rows)))
        out.index_copy_(0, item_rows, self.item(flat.index_select(0, item_rows)))
        return out.view_as(x)


def narrowed_copy(mlp: nn.Module, width: float) -> nn.Module:
    """A copy of a gated MLP (gate/up/down projections) keeping the first `width` share of its
    hidden units: the item expert starts as (a slice of) the text expert."""
    item = copy.deepcopy(mlp)
    if width == 1:
        return item
    keep = max(1, int(round(mlp.gate_proj.out_features * width)))
    with torch.no_grad():
        for name in ("gate_proj", "up_proj"):
            old = getattr(mlp, name)
            new = nn.Linear(
                old.in_features, keep, bias=old.bias is not None, dtype=old.weight.dtype
            )
            new.weight.copy_(old.weight[:keep])
            if old.bias is not None:
                new.bias.copy_(old.bias[:keep])
            setattr(item, name, new)
        old = mlp.down_proj
        new = nn.Linear(keep, old.out_features, bias=old.bias is not None, dtype=old.weight.dtype)
        new.weight.copy_(old.weight[:, :keep])
        if old.bias is not None:
            new.bias.copy_(old.bias)
        item.down_proj = new
    return item


def expert_layer_indices(spec: str | list[int], n_layers: int) -> list[int]:
    if isinstance(spec, list):
        bad = [i for i in spec if not 0 <= i < n_layers]
        if bad:
            raise ValueError(
                f"idiomoe: expert_layers {bad} out of range (the backbone has {n_layers} layers)"
            )
        return sorted(set(spec))
    if spec == "all":
        return list(range(n_layers))
    if spec == "none":
        return []
    if spec.startswith("last_") and spec[5:].isdigit():
        return list(range(max(0, n_layers - int(spec[5:])), n_layers))
    raise ValueError(
        f"idiomoe: expert_layers '{spec}' is not all, none, last_N or a list of layer indices"
    )


class IdiomoeRecommender(LLMRecommender):
    cfg: IdiomoeConfig
    # a request follows the instruction as text tokens, which token-type routing sends to the
    # frozen text expert (the paper's case for keeping it intact)
    reads_requests = True
    exports_policy = True  # a steered row restores it (llm4rec.paradigms.steered)
    one_forward = True  # one forward pass over item tokens per batch of users (no beams)

    def prepare(self, split: Split) -> dict[str, Any]:
        cfg, base = self.cfg, _decoder_stack(self.model)
        if base.config.model_type not in SUPPORTED:
            raise ValueError(
                f"idiomoe: architecture '{base.config.model_type}' is not supported "
                f"(decoder layers with a gated `mlp`: {', '.join(SUPPORTED)})"
            )
        if cfg.routing not in ("token_type", "learned"):
            raise ValueError(f"idiomoe: routing '{cfg.routing}' is not token_type or learned")
        if cfg.sft.weight_decay:
            raise ValueError(
                "idiomoe: sft.weight_decay must be 0 (the frozen text side must not move)"
            )
        self.items = split.items["item_id"].astype(str).tolist()
        self.index = {item: i for i, item in enumerate(self.items)}
        text = base.model.embed_tokens
        self.types = TokenTypes(first_item_id=text.num_embeddings)
        for p in self.model.parameters():
            p.requires_grad_(False)
        init = self._item_init(split, text.weight.detach())
        base.model.embed_tokens = CatalogueEmbedding(text, init, self.types)
        layers = expert_layer_indices(cfg.expert_layers, len(base.model.layers))
        for i in layers:
            text_mlp = base.model.layers[i].mlp
            base.model.layers[i].mlp = TokenTypeExperts(
                text_mlp,
                narrowed_copy(text_mlp, cfg.item_expert_width),
                self.types,
                learned=cfg.routing == "learned",
            )
        head = cfg.prompt.around_history()[0]
        self.prompt_head = self.tokenizer(head, add_special_tokens=False).input_ids
        self.bias = self._item_bias(split)
        self.head = self._item_head()
        self.trainable()
        return {
            "expert_layers": layers,
            "item_tokens": len(self.items),
            "first_item_id": self.types.first_item_id,
            "item_init": cfg.item_init,
            "routing": cfg.routing,
        }

    def trainable(self) -> None:
        """Item embeddings, item experts and gates train; the text side (embeddings, text experts,
        attention, norms) stays frozen. Called again after LoRA wrapping, which freezes the rest."""
        base = _decoder_stack(self.model)
        base.model.embed_tokens.items.requires_grad_(True)
        for param in (self.bias, self.head):
            if param is not None:
                param.requires_grad_(True)
        for layer in base.model.layers:
            if isinstance(layer.mlp, TokenTypeExperts):
                for module in (layer.mlp.item, layer.mlp.gate):
                    for p in module.parameters() if module is not None else ():
                        p.requires_grad_(True)

    def _item_init(self, split: Split, text: torch.Tensor) -> torch.Tensor:
        if self.cfg.item_init == "random":
            generator = torch.Generator().manual_seed(self.seed)
            return (
                torch.randn((len(self.items), text.shape[1]), generator=generator)
                * text.float().std()
            )
        if self.cfg.item_init != "title_mean":
            raise ValueError(
                f"idiomoe: item_init '{self.cfg.item_init}' is not title_mean or random"
            )
        titles = split.items["title"].astype(str).tolist()
        rows = []
        for item, title in zip(self.items, titles, strict=True):
            ids = (
                self.tokenizer(" " + title, add_special_tokens=False).input_ids
                if title.strip()
                else []
            )
            if not ids:
                raise ValueError(
                    f"idiomoe: item '{item}' has no title to initialise its token from "
                    "(item_init: title_mean); use item_init: random for items without text"
                )
            rows.append(text[ids].float().mean(dim=0))
        return torch.stack(rows).to(text.dtype)

    def _item_bias(self, split: Split) -> nn.Parameter | None:
        """The restricted softmax's per-item bias, registered on the item embedding (so it trains,
        checkpoints and restores with it). log_popularity starts it at the log of each item's
        training count (+1): a popularity prior the item tokens then learn to correct."""
        kind = self.cfg.item_bias
        if kind == "none":
            return None
        if kind == "log_popularity":
            init = log_popularity_prior(split, self.items)
        elif kind == "zero":
            init = torch.zeros(len(self.items))
        else:
            raise ValueError(f"idiomoe: item_bias '{kind}' is not log_popularity, zero or none")
        embedding = _decoder_stack(self.model).model.embed_tokens
        embedding.bias = nn.Parameter(init)
        return embedding.bias

    def _item_head(self) -> nn.Parameter | None:
        """untied: the restricted softmax's item vectors, separate from the input ones and starting
        at zero, so step 0 ranks by the bias alone (log_popularity: as MostPop) and training moves
        off it. tied: None (the softmax reads the input item embeddings)."""
        if self.cfg.item_head == "tied":
            return None
        if self.cfg.item_head != "untied":
            raise ValueError(f"idiomoe: item_head '{self.cfg.item_head}' is not untied or tied")
        embedding = _decoder_stack(self.model).model.embed_tokens
        embedding.head = nn.Parameter(torch.zeros_like(embedding.items))
        return embedding.head

    def item_ids(self, history: Sequence[str]) -> list[int]:
        return [self.types.first_item_id + self.index[i] for i in history]

    def prompt(self, history: Sequence[str], request: str = "") -> Prompt:
        return Prompt(
            self.prompt_head
            + self.request_ids(request)
            + self.item_ids(list(history)[-self.cfg.max_history :])
        )

    def training_examples(
        self, split: Split, rng: np.random.Generator
    ) -> list[tuple[list[int], list[int]]]:
        """Windows of max_history + 1 items over each user's training sequence (stride max_history):
        (instruction + item tokens, next-item targets: each item position's catalogue index, else
        -100); with `train_requests`, a share of them carry the last item's request after the
        instruction, and those supervise the last position alone (the item the request
        describes)."""
        n, examples = self.cfg.max_history, []
        train, requests = split.phase("train"), self.training_requests(split)
        for _, group in train.groupby("user_id")["item_id"]:
            items = group.astype(str).tolist()
            for end in range(len(items), 1, -n):
                window = items[max(0, end - n - 1) : end]
                request = requests(window[-1])
                head = self.prompt_head + self.request_ids(request)
                ids = head + self.item_ids(window[:-1])
                targets = [-100] * len(head) + [self.index[i] for i in window[1:]]
                # a window with a request supervises only the position the request describes (the
                # last item's): at every earlier position it would describe another item
                if self.cfg.loss_positions == "last" or (request and self.supervises_described()):
                    targets = [-100] * (len(targets) - 1) + targets[-1:]
                examples.append((token_array(ids), token_array(targets)))
        cap = self.cfg.max_train_examples
        if cap and len(examples) > cap:
            examples = [examples[i] for i in sorted(rng.choice(len(examples), cap, replace=False))]
        return examples

    def item_logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, n_items]: the restricted softmax's logits at every position (one forward)."""
        base = _decoder_stack(self.model)
        hidden = base.model(input_ids=ids, attention_mask=mask).last_hidden_state
        # item_head tied: the input item embeddings; untied: the head's own vectors
        vectors = base.model.embed_tokens.items if self.head is None else self.head
        # fp32 with autocast off (llm4rec.llm.precision: bf16 would tie the top 50)
        return precision.fp32_linear(hidden, vectors, self.bias)

    def training_loss(self):
        pad, device = self.tokenizer.pad_token_id, self.device

        def loss(model, examples: list, step: int) -> tuple[torch.Tensor, int]:
            length = max(len(ids) for ids, _ in examples)
            ids = torch.full((len(examples), length), pad, dtype=torch.long)
            targets = torch.full((len(examples), length), -100, dtype=torch.long)
            mask = torch.zeros((len(examples), length), dtype=torch.long)
            for row, (x, y) in enumerate(examples):
                ids[row, : len(x)], targets[row, : len(y)], mask[row, : len(x)] = (
                    torch.as_tensor(x),
                    torch.as_tensor(y),
                    1,
                )
            logits = self.item_logits(ids.to(device), mask.to(device))
            return nn.functional.cross_entropy(
                logits.float().flatten(0, 1), targets.to(device).flatten(), ignore_index=-100
            ), int(mask.sum())

        return loss

    def decode(
        self, ids: Tensor, mask: Tensor, inputs_embeds: Tensor | None, histories: Blocked, k: int
    ) -> Ranked:
        # left-padded: the last column is every prompt's end
        logits = self.item_logits(ids, mask)[:, -1, :]
        return top_unseen_items(
            logits, histories, self.index, self.items, k, self.decode_stats, mask
        )


def build(spec: BuildSpec) -> IdiomoeRecommender:
    """idiomoe and its variants (llm4rec.models): idiomoe_popprior sets item_head: untied and
    item_bias: log_popularity; idiomoe_learned_router routing: learned; idiomoe_entangled
    expert_layers: none, with LoRA on every FFN by default."""
    return IdiomoeRecommender(spec.config, spec.seed, spec.device, spec.selection)


train_budget = steps_budget  # MLflow's budget.train


def estimate_cost(config: IdiomoeConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: windows of max_history + 1 item tokens (strided), the item expert in the
    chosen blocks (half its FLOPs per token: it sees the item half of the tokens), the item
    softmax at every item position, one forward per ranked user."""
    estimate, budget = sft_budget(config, cell, strided=True)
    shape, n = budget.shape, budget.shape.params
    experts = len(expert_layer_indices(config.expert_layers, shape.layers))
    head = shape.hidden * cell.stats["items"]
    expert = experts * 3 * shape.hidden * shape.intermediate * config.item_expert_width
    trainable = expert + 2 * head + budget.lora
    prompt = 8 + config.max_history
    train_sequences(
        estimate,
        n + expert / 2,
        trainable,
        prompt,
        budget.examples,
        head,
        config.max_history,
        **budget.passes,
    )
    for users in (cell.valid_users * budget.evaluations, cell.test_users + cell.valid_users):
        rank_users(estimate, n, users, prompt, config.batch_users, head=head, layers=shape.layers)
    title = cell.stats["title_tokens"]
    return sft_finish(estimate, budget, trainable, prompt, config.sft.batch_size, title)
