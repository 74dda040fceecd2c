"""SASRec trained as its paper trains it (Kang & McAuley, ICDM 2018), and SASRec+ (Klenitskiy &
Vasilev, RecSys 2023): each user's training sequence once per epoch, a loss at every position.

RecBole's SASRec turns every prefix of every user into a training example of its own (one loss, at
the prefix's end): about max-length times the work of the paper's training per epoch on a dense
dataset (on ML-1M at length 200, about 200 times), which the papers and every published anchor do
not do. This module trains the same network the paper's way, and keeps RecBole's network:

- **The network** (`block`):
  - `recbole` (the default): RecBole's SASRec, layer for layer and parameter for parameter (item
    and position embeddings, RecBole's `TransformerEncoder`: post-norm blocks, GELU feed-forward;
    input LayerNorm and dropout; padding item 0; left-aligned sequences with RecBole's causal
    attention mask). A state dict moves between the two as is, and the same weights give the same
    scores as RecBole's `full_sort_predict` (tests/test_recbole_parity.py): the comparability of a
    RecBole baseline, without its training loop.
  - `paper`: the SASRec paper's block, as its reference code and the published anchors build it
    (Kang & McAuley's TensorFlow code; pmixer/SASRec.pytorch; Klenitskiy & Vasilev's): item
    embeddings scaled by sqrt(d) plus positions, dropout, padding zeroed; per block the queries
    layer-normalised, attention over the unnormalised sequence, the normalised queries added back,
    a LayerNorm, a ReLU feed-forward with its residual, padding zeroed; a last LayerNorm (eps 1e-8
    throughout). The anchors (benchmarks/anchors.yaml) copy it with the feed-forward width d.
- **Training** (per epoch, users in a seeded order, `batch_size` users a step): a user's last
  `max_len + 1` training items give inputs items[:-1] and targets items[1:], every position a
  target (padding masked).
  - `loss: bce` (`sasrec`, the SASRec paper): binary cross-entropy of the next item against one
    sampled negative, an item outside the user's training window (its last `max_len + 1` items, as
    Klenitskiy & Vasilev's code), drawn per position (`negatives:
    per_position`, the paper, and Klenitskiy & Vasilev's published BCE run) or once per sequence
    and shared by its positions (`per_sequence`, their code's default without full negative
    sampling).
  - `loss: ce` (`sasrec_ce`, SASRec+): full softmax cross-entropy over the catalogue at every
    position.
  Adam (the paper's betas 0.9, 0.98; `optimizer: adamw` where a source used AdamW); after every
  epoch the protocol's validation score through the one evaluator picks the epoch (`patience`
  epochs without a better one stop training).
- **Ranking**: the user's last `max_len` history items, the output at the last one, dot products
  with every item embedding, history excluded.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, baseline_estimate, baseline_settings, epochs_budget
from llm4rec.evaluation.evaluate import sample_users, selection_score
from llm4rec.evaluation.metrics import metric_cutoff
from llm4rec.io import write_npy, write_text
from llm4rec.models import BuildSpec, Histories, ranking_frame

LOSSES = ("bce", "ce")
NEGATIVES = ("per_position", "per_sequence")
BLOCKS = ("recbole", "paper")
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass(frozen=True)
class SasrecConfig:
    loss: str = "bce"  # bce (the SASRec paper) | ce (SASRec+: full softmax)
    negatives: str = "per_position"  # bce: a negative per position | one per sequence
    max_len: int = 200  # the history items the model reads (the paper's 200 on ML-1M)
    hidden_size: int = 64
    inner_size: int = 256  # the feed-forward width (RecBole's default)
    n_layers: int = 2
    n_heads: int = 1
    hidden_dropout: float = 0.2
    attn_dropout: float = 0.2
    hidden_act: str = "gelu"  # RecBole's (block recbole); the paper's block is relu
    block: str = "recbole"  # recbole (RecBole's network) | paper (the SASRec paper's block)
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam (the papers) | adamw (decoupled weight decay: LlamaRec, LRURec)
    batch_size: int = 128  # users per step
    epochs: int = 200  # at most
    patience: int = 10  # epochs without a better validation score before stopping
    valid_users: int | None = None  # the validation sample per epoch (None: every user)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss '{self.loss}' is not one of: {', '.join(LOSSES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer '{self.optimizer}' is not one of: {', '.join(OPTIMIZERS)}")
        if self.block not in BLOCKS:
            raise ValueError(f"block '{self.block}' is not one of: {', '.join(BLOCKS)}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"negatives '{self.negatives}' is not one of: {', '.join(NEGATIVES)}")
        if self.max_len < 1 or self.batch_size < 1 or self.epochs < 0:
            raise ValueError("max_len and batch_size must be >= 1 and epochs >= 0")


@dataclass(frozen=True)
class SasrecCeConfig(SasrecConfig):
    """`sasrec_ce`, SASRec+: a model of its own (not a variant), the softmax loss its definition."""

    loss: str = "ce"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.loss != "ce":
            raise ValueError(f"loss '{self.loss}': sasrec_ce is SASRec+, the ce loss (bce: sasrec)")


def sasrec_network(n_items: int, cfg: SasrecConfig) -> nn.Module:
    """The network `cfg.block` names over `n_items` items (0: padding): forward([B, L] items) ->
    [B, L, H], and `item_embedding`, the output layer's weights."""
    return SASRecNet(n_items, cfg) if cfg.block == "recbole" else PaperSASRecNet(n_items, cfg)


class SASRecNet(nn.Module):
    """RecBole's SASRec network (recbole.model.sequential_recommender.sasrec), the same parameter
    names and shapes, over `n_items` items (index 0 the padding item), and its output at every
    position."""

    def __init__(self, n_items: int, cfg: SasrecConfig):
        from recbole.model.layers import TransformerEncoder

        super().__init__()
        self.item_embedding = nn.Embedding(n_items + 1, cfg.hidden_size, padding_idx=0)
        self.position_embedding = nn.Embedding(cfg.max_len, cfg.hidden_size)
        self.trm_encoder = TransformerEncoder(
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            hidden_size=cfg.hidden_size,
            inner_size=cfg.inner_size,
            hidden_dropout_prob=cfg.hidden_dropout,
            attn_dropout_prob=cfg.attn_dropout,
            hidden_act=cfg.hidden_act,
            layer_norm_eps=cfg.layer_norm_eps,
        )
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        std = cfg.initializer_range
        for module in self.modules():  # RecBole's SASRec._init_weights
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight.data.normal_(mean=0.0, std=std)
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] left-aligned item sequences (0: padding) -> [B, L, H], the output at every
        position (RecBole's forward before it gathers the last one)."""
        positions = torch.arange(items.size(1), device=items.device).unsqueeze(0).expand_as(items)
        hidden = self.dropout(
            self.LayerNorm(self.item_embedding(items) + self.position_embedding(positions))
        )
        # RecBole's get_attention_mask: causal, and no attention to padding
        mask = (items != 0).unsqueeze(1).unsqueeze(2)
        mask = torch.tril(mask.expand((-1, -1, items.size(-1), -1)))
        mask = torch.where(mask, 0.0, -10000.0)
        return self.trm_encoder(hidden, mask, output_all_encoded_layers=True)[-1]


class PaperSASRecNet(nn.Module):
    """The SASRec paper's network (module doc, `block: paper`)."""

    def __init__(self, n_items: int, cfg: SasrecConfig):
        super().__init__()
        d, eps = cfg.hidden_size, 1e-8
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.position_embedding = nn.Embedding(cfg.max_len, d)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.attention_norms = nn.ModuleList(nn.LayerNorm(d, eps=eps) for _ in range(cfg.n_layers))
        self.attentions = nn.ModuleList(
            nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.attn_dropout, batch_first=True)
            for _ in range(cfg.n_layers)
        )
        self.forward_norms = nn.ModuleList(nn.LayerNorm(d, eps=eps) for _ in range(cfg.n_layers))
        self.feed_forwards = nn.ModuleList(
            nn.Sequential(
                nn.Linear(d, cfg.inner_size),
                nn.Dropout(cfg.hidden_dropout),
                nn.ReLU(),
                nn.Linear(cfg.inner_size, d),
                nn.Dropout(cfg.hidden_dropout),
            )
            for _ in range(cfg.n_layers)
        )
        self.last_norm = nn.LayerNorm(d, eps=eps)
        for (
            module
        ) in self.modules():  # the reference code's init (attention in-projections: Xavier)
            if isinstance(module, nn.Linear | nn.Embedding):
                module.weight.data.normal_(mean=0.0, std=cfg.initializer_range)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        self.item_embedding.weight.data[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        length = items.size(1)
        positions = torch.arange(length, device=items.device).unsqueeze(0).expand_as(items)
        keep = (items != 0).unsqueeze(-1).to(self.item_embedding.weight.dtype)
        hidden = self.item_embedding(items) * self.item_embedding.embedding_dim**0.5
        hidden = self.dropout(hidden + self.position_embedding(positions)) * keep
        # causal: position t attends to positions <= t (left-aligned rows: padding comes later)
        future = torch.triu(torch.ones(length, length, dtype=torch.bool, device=items.device), 1)
        for norm, attention, forward_norm, feed_forward in zip(
            self.attention_norms,
            self.attentions,
            self.forward_norms,
            self.feed_forwards,
            strict=True,
        ):
            queries = norm(hidden)
            attended, _ = attention(queries, hidden, hidden, attn_mask=future, need_weights=False)
            hidden = forward_norm(queries + attended)
            hidden = (hidden + feed_forward(hidden)) * keep
        return self.last_norm(hidden)


def sequence_batch(sequences: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """[B, length] left-aligned rows (RecBole's layout), padded with 0."""
    out = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
    return out


def position_loss(
    net: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean loss over every non-padding position of a batch: inputs and targets [B, L] (0:
    padding, no loss), negatives [B, L] (bce: the sampled item at each position). bce: -log
    sigmoid(s+) - log(1 - sigmoid(s-)); ce: cross-entropy over every item (not the padding item)."""
    hidden = net(inputs)
    where = targets != 0
    weights = net.item_embedding.weight
    if loss == "ce":
        logits = hidden[where] @ weights[1:].T
        return nn.functional.cross_entropy(logits, targets[where] - 1)
    positive = (hidden * net.item_embedding(targets)).sum(-1)[where]
    negative = (hidden * net.item_embedding(negatives)).sum(-1)[where]
    # the two terms, each averaged over the same positions
    return nn.functional.binary_cross_entropy_with_logits(
        positive, torch.ones_like(positive)
    ) + nn.functional.binary_cross_entropy_with_logits(negative, torch.zeros_like(negative))


class NativeSASRec:
    """SASRec / SASRec+ behind the harness's Recommender protocol (module doc)."""

    def __init__(self, cfg: SasrecConfig, seed: int, device: str, selection: str):
        self.cfg, self.seed, self.device, self.selection = cfg, seed, device, selection

    def _index(self, split: Split) -> None:
        self.items = split.items["item_id"].astype(str).tolist()
        self.row = {item: i + 1 for i, item in enumerate(self.items)}  # 0: padding

    def fit(self, split: Split, workdir: Path) -> dict:
        cfg = self.cfg
        self._index(split)
        torch.manual_seed(self.seed)
        self.net = sasrec_network(len(self.items), cfg).to(self.device)
        train = split.phase("train")
        sequences = [
            [self.row[str(i)] for i in group.astype(str)]
            for _, group in train.groupby("user_id", sort=True)["item_id"]
        ]
        sequences = [s[-(cfg.max_len + 1) :] for s in sequences if len(s) >= 2]
        optimizer = OPTIMIZERS[cfg.optimizer](
            self.net.parameters(),
            lr=cfg.learning_rate,
            betas=tuple(cfg.betas),
            weight_decay=cfg.weight_decay,
        )
        generator = torch.Generator().manual_seed(self.seed)
        users = sample_users(sorted(split.targets("valid")), cfg.valid_users, self.seed)
        history = split.history("valid")
        valid = {u: history.get(u, []) for u in users}
        cutoff = metric_cutoff(self.selection)
        best, best_epoch, stale, curve, losses = -1.0, 0, 0, [], []
        best_state = copy.deepcopy(self.net.state_dict())
        for epoch in range(1, cfg.epochs + 1):
            self.net.train()
            order = torch.randperm(len(sequences), generator=generator).tolist()
            total, steps = 0.0, 0
            for begin in range(0, len(order), cfg.batch_size):
                batch = [sequences[i] for i in order[begin : begin + cfg.batch_size]]
                width = max(len(s) for s in batch) - 1
                inputs = sequence_batch([s[:-1] for s in batch], width)
                targets = sequence_batch([s[1:] for s in batch], width)
                negatives = (
                    self._negatives(batch, targets, generator) if cfg.loss == "bce" else None
                )
                loss = position_loss(
                    self.net,
                    inputs.to(self.device),
                    targets.to(self.device),
                    cfg.loss,
                    negatives.to(self.device) if negatives is not None else None,
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, steps = total + loss.item(), steps + 1
            losses.append(total / max(steps, 1))
            score = selection_score(self.rank(valid, cutoff), split, self.selection, users)
            if not np.isfinite(score):
                raise ValueError(
                    f"sasrec: validation {self.selection} is {score} at epoch {epoch} "
                    f"({len(users)} validation users): no epoch can be chosen"
                )
            curve.append({"epoch": epoch, self.selection: score})
            print(
                f"[sasrec] epoch {epoch}: loss {losses[-1]:.4f}, "
                f"valid {self.selection} {score:.4f}",
                flush=True,
            )
            if score > best:
                best, best_epoch, stale = score, epoch, 0
                best_state = copy.deepcopy(self.net.state_dict())
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        self.net.load_state_dict(best_state)
        self.net.eval()
        n_params = sum(p.numel() for p in self.net.parameters())
        return {
            f"best_valid_{self.selection}": best,
            "selection_metric": self.selection,
            "best_epoch": best_epoch,
            "epochs": len(losses),
            "valid_curve": curve,
            "epoch_losses": losses,
            "training_sequences": len(sequences),
            "parameters_total": n_params,
            "parameters_trainable": n_params,
        }

    def _negatives(
        self, batch: Sequence[Sequence[int]], targets: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """[B, L] a sampled item outside each user's sequence: per position, or one per sequence
        repeated at every position (`negatives`); uniform draws, the ones that hit the user's
        sequence redrawn until none does."""
        n = len(self.items)
        seen = torch.zeros(len(batch), n + 1, dtype=torch.bool)
        for row, seq in enumerate(batch):
            seen[row, list(seq)] = True
            if seen[row, 1:].all():
                raise ValueError(
                    f"sasrec: a training sequence holds all {n} catalogue items: no negative "
                    "to sample (loss bce needs an item outside it)"
                )
        width = targets.shape[1] if self.cfg.negatives == "per_position" else 1
        drawn = torch.randint(1, n + 1, (len(batch), width), generator=generator)
        rows = torch.arange(len(batch))[:, None].expand_as(drawn)
        clash = seen[rows, drawn]
        while clash.any():  # a user never holds most of the catalogue: a few rounds
            drawn[clash] = torch.randint(1, n + 1, (int(clash.sum()),), generator=generator)
            clash = seen[rows, drawn]
        return drawn.expand(-1, targets.shape[1]) * (targets != 0)

    @torch.no_grad()
    def scores(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """[users, 1 + items] each user's scores after its last `max_len` history items (column
        0: the padding item)."""
        self.net.eval()
        rows = [[self.row[str(i)] for i in h][-self.cfg.max_len :] for h in histories]
        lengths = torch.as_tensor([max(len(r), 1) for r in rows])
        out = []
        for begin in range(0, len(rows), 256):
            batch = rows[begin : begin + 256]
            hidden = self.net(sequence_batch(batch, self.cfg.max_len).to(self.device))
            last = hidden[torch.arange(len(batch)), lengths[begin : begin + 256] - 1]
            out.append(last @ self.net.item_embedding.weight.T)
        return torch.cat(out).float().cpu()

    def rank(self, histories: Histories, k: int) -> pd.DataFrame:
        users = sorted(histories)
        scores = self.scores([histories[u] for u in users])
        scores[:, 0] = -torch.inf
        for row, user in enumerate(users):
            seen = [self.row[str(i)] for i in histories[user]]
            if seen:
                scores[row, seen] = -torch.inf
        top_scores, top = torch.topk(scores, min(k, len(self.items)), dim=1)
        return ranking_frame(users, top_scores, top - 1, self.items)  # column 0: the padding

    def export(self, out_dir: Path, split: Split) -> dict[str, str]:
        """The item embeddings (rows in items.parquet order) and each evaluated phase's
        full-catalogue scores (what RTA's gating consumes), as the RecBole baselines export
        them."""
        written = {}
        for phase in ("valid", "test"):
            history = split.history(phase)
            users = sorted(split.targets(phase))
            scores = self.scores([history.get(u, []) for u in users])[:, 1:].numpy()
            write_npy(out_dir / f"scores_{phase}.npy", scores)
            write_text(out_dir / f"users_{phase}.txt", "\n".join(users) + "\n")
            written[f"scores_{phase}"] = (
                f"scores_{phase}.npy ([users_{phase}.txt, items.parquet order]: full-catalogue "
                f"scores given the {phase} history)"
            )
        embeddings = self.net.item_embedding.weight.detach()[1:].cpu().numpy()
        write_npy(out_dir / "item_embeddings.npy", embeddings)
        written["item_embeddings"] = "item_embeddings.npy (rows = items.parquet order)"
        return written

    def inference_cost(self) -> dict[str, float]:
        return {}


def build(spec: BuildSpec) -> NativeSASRec:
    """`sasrec` (loss bce) and `sasrec_ce` (loss ce)."""
    return NativeSASRec(spec.config, spec.seed, spec.device, spec.selection)


train_budget = epochs_budget  # MLflow's budget.train


def estimate_cost(config: SasrecConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: each user's sequence once an epoch, about one position per training
    interaction, a loss at each (ce: over every item; bce: a positive and a negative); epochs are
    early stopping's upper bound."""
    settings = baseline_settings(config)
    hidden = settings.get("embedding_size") or settings.get("hidden_size") or 64
    epochs = settings.get("epochs") or 0
    stats = cell.stats
    interactions, items, users = stats["train_interactions"], stats["items"], stats["users"]
    length = settings.get("max_len", 200)
    layer = 12 * hidden * hidden + 2 * min(length, interactions / users) * hidden
    head = hidden * items if settings.get("loss") == "ce" else 2 * hidden
    flops = epochs * interactions * 6 * (settings.get("n_layers", 2) * layer + head)
    return baseline_estimate(settings, cell, flops)


def toy_params(params: dict[str, Any], steps: int) -> dict[str, Any]:
    """`llm4rec smoke`: two epochs of short sequences."""
    return params | {"epochs": 2, "max_len": min(params.get("max_len", 200), 10)}
