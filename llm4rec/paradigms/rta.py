"""Reindex-Then-Adapt (He et al., WSDM 2025): one token per item in a frozen LLM, then adapt its
item distribution to the platform.

The LLM never changes. It reads each user's recent history as titles, one per line, and its last
hidden state q at the end of a line is what it would continue from: the next title's first
token. The `llm_states` artifact computes these q once per dataset and backbone (every row and
seed shares them): one forward per user over the last `window` items of the user's non-test
sequence, a q after each item, so each forward gives the test query (after the last item), the
validation query (after the last training item) and training queries (after earlier items,
targets inside the training phase).

1. Reindex: each item becomes one new token whose (output) embedding e_i an aggregator computes
   from its title's token embeddings: attention-weighted pooling (starting as the mean) followed
   by a linear map starting at the identity, or (`aggregator: transformer`) one transformer layer
   over the title tokens first. Trained with the contrastive loss of the reindex step: q scores
   its target's token above the other items of the batch (`negatives: in_batch`; `catalogue`: all
   items). Ranking is one matmul q . E over the whole catalogue.
2. Adapt (`adapt.kind`):
   - `bias`: p = softmax(g W + b) over the catalogue, g = q . E the reindexed logits; b (and W:
     `weight` scalar or full) trained by cross-entropy on the training queries, the aggregator
     frozen unless `train_aggregator` (the paper's ablation of which parts are frozen).
   - `gating`: log p = a log softmax(g) + (1 - a) log softmax(g~), g~ the full-catalogue scores of
     a finished baseline run (`inputs.recsys`, SASRec by default: its `scores_<phase>.npy`
     export); a configured, or chosen on validation over 0, 0.1, ..., 1.
Epochs (and a) are selected on the validation queries with the protocol's selection metric.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from llm4rec.data.requests import RequestTemplate
from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, backbone_shape, epochs_budget
from llm4rec.evaluation.evaluate import sample_users, selection_score
from llm4rec.evaluation.metrics import metric_cutoff
from llm4rec.io import read_json, write_json, write_npy, write_parquet
from llm4rec.llm.backbone import BackboneConfig
from llm4rec.llm.prompts import PromptTemplate, plain_prompt
from llm4rec.models import BuildSpec, Histories, Requests, ResolvedInput, ranking_frame

AGGREGATORS, NEGATIVES = ("weighted", "transformer"), ("in_batch", "catalogue")
ADAPTS, WEIGHTS = ("none", "bias", "gating"), ("none", "scalar", "full")
GATING_GRID = tuple(round(0.1 * i, 1) for i in range(11))


# -- the frozen LLM's queries (the `llm_states` artifact) -----------------------------------------
@dataclass(frozen=True)
class StatesConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    # a header, then one line per history item: its title, then a separator; q is the hidden
    # state at each line's last token (the grid words it for its data)
    prompt: PromptTemplate = plain_prompt(
        "A user watched these movies, oldest first:\n{history}", line="{title}\n"
    )
    window: int = 20  # the last items of each user's non-test sequence the LLM reads
    batch_size: int = 16  # users per forward

    def __post_init__(self) -> None:
        self.prompt.check(("title",), chat=False, tail=False)  # q is read at each line's end
        if self.window < 2 or self.batch_size < 1:
            raise ValueError(
                "window must be >= 2 (the validation and test queries) and batch_size >= 1 "
                f"(got {self.window}, {self.batch_size})"
            )
        if self.prompt.around("title")[0] or not self.separator:
            raise ValueError(
                "prompt.line must be {title} then a non-empty separator (the query is read at "
                f"each line's end), got {self.prompt.line!r}"
            )

    @property
    def header(self) -> str:
        return self.prompt.around_history()[0]

    @property
    def separator(self) -> str:
        """What ends each history line (and the steered row's request line)."""
        return self.prompt.around("title")[1]


def query_positions(sequence_lengths: Sequence[int], window: int) -> list[list[int]]:
    """Per user, the positions (0-based, in the user's non-test sequence) after which the LLM is
    read: each item of the last `window` items."""
    return [list(range(max(0, n - window), n)) for n in sequence_lengths]


def _tokens(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def hidden_states(
    model: Any, pad_id: int, prompts: Sequence[Sequence[int]], batch_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(prompt index, [tokens, d] last hidden states) of each prompt, read in batches of similar
    lengths, right-padded: a real token never attends to a pad, so a prompt's states are those of
    it alone."""
    order = sorted(range(len(prompts)), key=lambda u: len(prompts[u]))
    for begin in range(0, len(order), batch_size):
        batch = order[begin : begin + batch_size]
        width = max(len(prompts[u]) for u in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, u in enumerate(batch):
            ids[r, : len(prompts[u])] = torch.as_tensor(prompts[u])
            mask[r, : len(prompts[u])] = 1
        hidden = model.base_model(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
        ).last_hidden_state
        for r, u in enumerate(batch):
            yield u, hidden[r]


def build_llm_states(split: Split, params: StatesConfig, seed: int | None, out_dir: Path) -> dict:
    """The `llm_states` artifact: states.npy ([queries, d] the backbone's final hidden state at
    the end of each history line), states.parquet (user_id, position: the item after which q is
    read, in the user's train + validation sequence; context: items the LLM saw), and the title
    tokens the aggregator pools: title_tokens.npy ([items, max tokens] rows of token_rows.npy,
    -1 padding, items.parquet order), token_rows.npy (those tokens' output embeddings) and
    states.json (this config: the backbone and prompt behind the queries)."""
    from llm4rec.llm.backbone import load_backbone, resolve_device
    from llm4rec.llm.identifiers import item_identifiers

    cfg = params.backbone
    model, tokenizer = load_backbone(dataclasses.replace(cfg, device=resolve_device(cfg.device)))
    titles, _ = item_identifiers(split.items)
    items = split.items["item_id"].astype(str).tolist()
    title_ids = [_tokens(tokenizer, titles[i]) for i in items]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    header, separator = (
        bos + _tokens(tokenizer, params.header),
        _tokens(tokenizer, params.separator),
    )
    row = {item: i for i, item in enumerate(items)}
    sequences = split.history("test")  # train + validation items, per user, in time order
    users = sorted(sequences)
    positions = query_positions([len(sequences[u]) for u in users], params.window)
    prompts, reads = [], []  # token ids per user; the token index of each query
    for user, where in zip(users, positions, strict=True):
        ids, at = list(header), []
        for p in where:
            ids += title_ids[row[str(sequences[user][p])]] + separator
            at.append(len(ids) - 1)
        prompts.append(ids)
        reads.append(at)
    states: list[np.ndarray | None] = [None] * len(users)
    for u, hidden in hidden_states(model, tokenizer.pad_token_id, prompts, params.batch_size):
        states[u] = hidden[reads[u]].float().cpu().numpy()
    used = sorted({t for ids in title_ids for t in ids})
    index = {t: i for i, t in enumerate(used)}
    table = np.full((len(items), max(len(t) for t in title_ids)), -1, dtype=np.int64)
    for i, ids in enumerate(title_ids):
        table[i, : len(ids)] = [index[t] for t in ids]
    output = model.get_output_embeddings().weight.detach()[torch.as_tensor(used)]
    frame = pd.DataFrame(
        [
            (user, p, c + 1)
            for user, where in zip(users, positions, strict=True)
            for c, p in enumerate(where)
        ],
        columns=["user_id", "position", "context"],
    )
    out_dir = Path(out_dir)
    write_npy(out_dir / "states.npy", np.concatenate(states).astype(np.float32))
    write_parquet(out_dir / "states.parquet", frame)
    write_npy(out_dir / "title_tokens.npy", table)
    write_npy(out_dir / "token_rows.npy", output.float().cpu().numpy())
    write_json(out_dir / "states.json", dataclasses.asdict(params))  # the LLM and prompt behind q
    return {
        "queries": len(frame),
        "users": len(users),
        "dim": int(output.shape[1]),
        "prompt_tokens": int(sum(len(p) for p in prompts)),
        "title_tokens_mean": float(np.mean([len(t) for t in title_ids])),
        "backbone": cfg.name_or_path,
    }


# -- the aggregator and the reindex loss ----------------------------------------------------------
class Aggregator(nn.Module):
    """Each item's one token: a pooling of its title's token embeddings (padding -1)."""

    def __init__(self, token_rows: torch.Tensor, titles: torch.Tensor, kind: str, heads: int):
        super().__init__()
        dim = token_rows.shape[1]
        self.register_buffer("token_rows", token_rows)
        self.register_buffer("titles", titles)
        self.encoder = (
            nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True)
            if kind == "transformer"
            else None
        )
        self.attention = nn.Linear(dim, 1)  # zero: every token weighs the same (the mean)
        nn.init.zeros_(self.attention.weight)
        nn.init.zeros_(self.attention.bias)
        self.out = nn.Linear(dim, dim)  # the identity: the pooled title embedding itself
        nn.init.eye_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self) -> torch.Tensor:
        present = self.titles >= 0
        x = self.token_rows[self.titles.clamp(min=0)]
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=~present)
        weights = self.attention(x).squeeze(-1).masked_fill(~present, -torch.inf).softmax(-1)
        return self.out((weights[..., None] * x).sum(1))


def reindex_loss(
    queries: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, negatives: str
) -> torch.Tensor:
    """Mean cross-entropy of each query's target token, logits q . e_j over the batch's distinct
    target items (`in_batch`) or the whole catalogue (`catalogue`)."""
    if negatives == "catalogue":
        return nn.functional.cross_entropy(queries @ items.T, targets)
    candidates, label = torch.unique(targets, return_inverse=True)
    return nn.functional.cross_entropy(queries @ items[candidates].T, label)


def adapted_logits(
    logits: torch.Tensor, bias: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """The bias-term adjustment g W + b (W a scalar, a full [items, items] matrix, or none)."""
    if weight is None:
        return logits + bias
    return (logits * weight if weight.dim() == 0 else logits @ weight) + bias


def gate_note(alpha: float, chosen: bool, recsys: str = "the RecSys") -> str:
    """What the gate's weight means, for the tables: a gate at 0 ranks by the RecSys alone, at 1 by
    the reindexed LLM alone (then the row is one of its parts, not a combination)."""
    how = "chosen on validation" if chosen else "configured"
    if alpha == 0.0:
        return f"gate chose {recsys} only (α = 0, {how}): the row is that run's ranking"
    if alpha == 1.0:
        return f"gate chose the LLM only (α = 1, {how}): the row is the reindexed LLM's ranking"
    return f"α = {alpha:g} ({how}; the LLM's weight)"


def gated_scores(llm: torch.Tensor, recsys: torch.Tensor, alpha: float) -> torch.Tensor:
    """RecSys gating in log space: a log softmax(g) + (1 - a) log softmax(g~)."""
    return alpha * llm.log_softmax(-1) + (1 - alpha) * recsys.log_softmax(-1)


# -- the recommender ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdaptConfig:
    kind: str = "none"  # none (reindex only) | bias | gating
    weight: str = "none"  # bias: none (b only) | scalar | full (W in softmax(g W + b))
    train_aggregator: bool = False  # bias: train the aggregator too (else frozen after reindex)
    alpha: float | None = None  # gating: the LLM's weight (None: chosen on validation)
    learning_rate: float = 0.05
    epochs: int = 30
    patience: int = 5

    def __post_init__(self) -> None:
        if self.kind not in ADAPTS or self.weight not in WEIGHTS:
            raise ValueError(
                f"adapt.kind '{self.kind}' / adapt.weight '{self.weight}': kind is one of "
                f"{', '.join(ADAPTS)}, weight one of {', '.join(WEIGHTS)}"
            )
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"adapt.alpha {self.alpha} must be in [0, 1] (or null: chosen)")


@dataclass(frozen=True)
class RtaConfig:
    aggregator: str = "weighted"  # weighted (attention pooling) | transformer (1 layer, then pool)
    heads: int = 4  # transformer aggregator
    negatives: str = "in_batch"  # the reindex loss's candidates: in_batch | catalogue
    batch_size: int = 512  # training queries per step
    learning_rate: float = 1e-3
    epochs: int = 30  # at most; validation after each epoch
    patience: int = 5
    valid_users: int = 0  # validation users scored per epoch (0: all)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def __post_init__(self) -> None:
        if self.aggregator not in AGGREGATORS or self.negatives not in NEGATIVES:
            raise ValueError(
                f"aggregator '{self.aggregator}' / negatives '{self.negatives}': aggregator is "
                f"one of {', '.join(AGGREGATORS)}, negatives one of {', '.join(NEGATIVES)}"
            )
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1 (got {self.epochs})")


class ReindexThenAdapt:
    def __init__(
        self,
        cfg: RtaConfig,
        seed: int,
        device: str,
        selection: str,
        states: ResolvedInput,
        recsys: ResolvedInput | None,
    ):
        if cfg.adapt.kind == "gating" and recsys is None:
            raise ValueError("adapt.kind 'gating' needs inputs.recsys (a baseline run's scores)")
        self.cfg, self.seed, self.device, self.selection = cfg, seed, device, selection
        self.states, self.recsys = states, recsys
        self.bias = self.weight = None
        self.alpha: float | None = None

    # data: the artifact's queries, split into training / validation / test queries
    def _load(self, split: Split) -> None:
        paths = self.states.paths
        frame = pd.read_parquet(paths["states.parquet"])
        q = np.load(paths["states.npy"])
        titles = np.load(paths["title_tokens.npy"])
        if len(titles) != len(split.items) or len(q) != len(frame):
            raise ValueError(
                f"{paths['title_tokens.npy']} (from {self.states.source}): {len(titles)} items and "
                f"{len(q)} queries for {len(frame)} rows, but this run's catalogue has "
                f"{len(split.items)} items; the input was built on another split"
            )
        self.items = split.items["item_id"].astype(str).tolist()
        self.row = {item: i for i, item in enumerate(self.items)}
        self.q = torch.tensor(q, device=self.device)
        self.query = {
            (str(u), int(p)): i
            for i, (u, p) in enumerate(zip(frame.user_id, frame.position, strict=True))
        }
        train = split.history("valid")  # training items, per user
        sequence = split.history("test")
        rows, targets = [], []
        for (user, position), i in self.query.items():
            if position + 1 < len(train.get(user, [])):  # the next item is a training item
                rows.append(i)
                targets.append(self.row[str(sequence[user][position + 1])])
        self.train_rows = torch.as_tensor(rows, device=self.device)
        self.train_targets = torch.as_tensor(targets, device=self.device)
        torch.manual_seed(self.seed)
        self.aggregator = Aggregator(
            torch.tensor(np.load(paths["token_rows.npy"])),
            torch.as_tensor(titles),
            self.cfg.aggregator,
            self.cfg.heads,
        ).to(self.device)

    def fit(self, split: Split, workdir: Path) -> dict:
        self._load(split)
        cfg = self.cfg
        users = sample_users(sorted(split.targets("valid")), cfg.valid_users or None, self.seed)
        history = split.history("valid")
        self.valid_histories = {u: history.get(u, []) for u in users}
        self.split, self.valid_users = split, users
        generator = torch.Generator().manual_seed(self.seed)
        info: dict = {
            "input": self.states.source,
            "states": read_json(self.states.paths["states.json"]),  # the frozen LLM and its prompt
            "train_queries": len(self.train_rows),
        }
        reindex = self._epochs(
            list(self.aggregator.parameters()), cfg.learning_rate, cfg.epochs, cfg.patience,
            generator, self._reindex_step,
        )  # fmt: skip
        info |= reindex  # the reindex step's epochs and curves (MLflow's curve.*)
        if cfg.adapt.kind == "bias":
            info |= {"adapt_" + k: v for k, v in self._fit_bias(generator).items()}
        elif cfg.adapt.kind == "gating":
            info |= self._fit_gating(split)
        trainable = sum(p.numel() for p in self.aggregator.parameters()) + sum(
            t.numel() for t in (self.bias, self.weight) if t is not None
        )
        best = info.get("gating_valid", info.get("adapt_best_valid", reindex["best_valid"]))
        info.pop("best_valid")  # under its metric's name below
        self.model = nn.ModuleDict({"aggregator": self.aggregator})  # what ranks (its digest)
        for name, value in (("bias", self.bias), ("weight", self.weight)):
            if value is not None:
                self.model.register_buffer(name, value.detach())
        if self.alpha is not None:
            self.model.register_buffer("alpha", torch.tensor(self.alpha))
        return info | {
            f"best_valid_{self.selection}": best,
            "parameters_trainable": trainable,
            "parameters_total": trainable,  # the frozen LLM ran in the llm_states artifact
        }

    def _reindex_step(self, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return reindex_loss(self.q[rows], self.aggregator(), targets, self.cfg.negatives)

    def _epochs(self, params, lr, epochs, patience, generator, step) -> dict:
        """Adam over shuffled training queries, validation after each epoch, the best epoch's
        parameters kept (epoch 0: as initialised)."""
        optimizer = torch.optim.Adam(params, lr=lr)
        best = self._valid_score()
        best_epoch, state, curve, losses, stale = 0, [p.detach().clone() for p in params], [], [], 0
        curve.append({"epoch": 0, self.selection: best})
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(self.train_rows), generator=generator).to(self.device)
            total = []
            for begin in range(0, len(order), self.cfg.batch_size):
                batch = order[begin : begin + self.cfg.batch_size]
                loss = step(self.train_rows[batch], self.train_targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total.append(loss.item())
            score = self._valid_score()
            curve.append({"epoch": epoch, self.selection: score})
            losses.append(float(np.mean(total)))
            if score > best:
                best, best_epoch, stale = score, epoch, 0
                state = [p.detach().clone() for p in params]
            else:
                stale += 1
                if stale >= patience:
                    break
        with torch.no_grad():
            for p, kept in zip(params, state, strict=True):
                p.copy_(kept)
        return {
            "epochs": len(losses),
            "best_epoch": best_epoch,
            "best_valid": best,
            "valid_curve": curve,
            "epoch_losses": losses,
        }

    def _fit_bias(self, generator: torch.Generator) -> dict:
        """p = softmax(g W + b): b (and W) by full-catalogue cross-entropy on training queries."""
        adapt, n = self.cfg.adapt, len(self.items)
        self.bias = torch.zeros(n, device=self.device, requires_grad=True)
        params = [self.bias]
        if adapt.weight != "none":
            init = torch.ones(()) if adapt.weight == "scalar" else torch.eye(n)
            self.weight = init.to(self.device).requires_grad_(True)
            params.append(self.weight)
        if adapt.train_aggregator:
            params += list(self.aggregator.parameters())
        else:
            self.aggregator.requires_grad_(False)

        def step(rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            logits = adapted_logits(self.q[rows] @ self.aggregator().T, self.bias, self.weight)
            return nn.functional.cross_entropy(logits, targets)

        return self._epochs(
            params, adapt.learning_rate, adapt.epochs, adapt.patience, generator, step
        )

    def _fit_gating(self, split: Split) -> dict:
        """The consumed run's scores; a as configured, or the best on validation."""
        self.recsys_scores = {
            phase: _phase_scores(self.recsys, phase, len(self.items)) for phase in ("valid", "test")
        }
        self.sequence_lengths = {
            phase: {u: len(h) for u, h in split.history(phase).items()}
            for phase in ("valid", "test")
        }
        configured = self.cfg.adapt.alpha
        curve = []
        for alpha in [configured] if configured is not None else GATING_GRID:
            self.alpha = alpha
            curve.append({"alpha": alpha, self.selection: self._valid_score()})
        best = max(curve, key=lambda c: c[self.selection])  # the first of equal scores
        self.alpha = best["alpha"]
        return {
            "recsys_input": self.recsys.source,
            "gating_alpha": self.alpha,
            "gating_chosen_on_validation": configured is None,
            "gating_curve": curve,
            "gating_valid": best[self.selection],
            "chosen": {"gating_alpha": self.alpha},
            "notes": [gate_note(self.alpha, configured is None, _run_name(self.recsys))],
        }

    def _valid_score(self) -> float:
        k = metric_cutoff(self.selection)
        return selection_score(
            self.rank(self.valid_histories, k), self.split, self.selection, self.valid_users
        )

    def queries(
        self, users: Sequence[str], histories: Histories, requests: Requests = None
    ) -> torch.Tensor:
        """[users, d]: each user's query, the artifact's state after the last history item."""
        if requests:
            raise ValueError(f"{type(self).__name__}: reads no request (rta_reindex_steer does)")
        missing = [u for u in users if (u, len(histories[u]) - 1) not in self.query]
        if missing:
            raise ValueError(
                f"user '{missing[0]}' with a history of {len(histories[missing[0]])} items: the "
                f"llm_states input ({self.states.source}) has no query after that item "
                f"({len(missing)} users); it covers the last `window` items of each sequence"
            )
        rows = torch.as_tensor([self.query[(u, len(histories[u]) - 1)] for u in users])
        return self.q[rows.to(self.device)]

    @torch.no_grad()
    def scores(
        self, histories: Mapping[str, Sequence[str]], requests: Mapping[str, str] | None = None
    ) -> tuple[list[str], torch.Tensor]:
        """(users, [users, items] scores) for the given histories, history not yet excluded."""
        users = sorted(histories)
        logits = self.queries(users, histories, requests) @ self.aggregator().T
        if self.bias is not None:
            return users, adapted_logits(logits, self.bias, self.weight)
        if self.alpha is not None:
            return users, gated_scores(logits, self._recsys_rows(users, histories), self.alpha)
        return users, logits

    def _recsys_rows(self, users: list[str], histories: Mapping[str, Sequence[str]]):
        """The consumed run's scores for these users' phase, told apart by history length among
        the phases the run scored the user in (a user without a validation target, e.g. its item
        held out as new, has the same history in both phases and scores only in test)."""
        rows = []
        for user in users:
            phase = next(
                (
                    p
                    for p in ("valid", "test")
                    if self.sequence_lengths[p].get(user) == len(histories[user])
                    and user in self.recsys_scores[p][0]
                ),
                None,
            )
            if phase is None:
                raise ValueError(
                    f"user '{user}': {self.recsys.source} has no scores for a history of "
                    f"{len(histories[user])} items (gating ranks the validation and test phases)"
                )
            index, matrix = self.recsys_scores[phase]
            rows.append(matrix[index[user]])
        return torch.as_tensor(np.stack(rows), device=self.device)

    @torch.no_grad()
    def rank(self, histories: Histories, k: int, requests: Requests = None) -> pd.DataFrame:
        users, scores = self.scores(histories, requests)
        for r, user in enumerate(users):
            scores[r, [self.row[str(i)] for i in histories[user]]] = -torch.inf
        top_scores, top = (t.cpu() for t in torch.topk(scores, min(k, scores.shape[1]), dim=1))
        return ranking_frame(users, top_scores, top, self.items)

    def export(self, out_dir: Path, split: Split) -> dict[str, str]:
        return {}

    def inference_cost(self) -> dict[str, float]:
        return {}


# -- steered: the request in the frozen LLM's prompt (issue 29) -----------------------------------
@dataclass(frozen=True)
class SteeredRtaConfig(RtaConfig):
    # the request written from each user's target (llm4rec.data.requests), and the line the prompt
    # carries it in, after the history's last title
    request: RequestTemplate = field(default_factory=RequestTemplate)
    line: str = "The user asks for {request}."

    def __post_init__(self) -> None:
        super().__post_init__()
        if "{request}" not in self.line:
            raise ValueError(f"line must contain {{request}}, got {self.line!r}")


class SteeredRta(ReindexThenAdapt):
    """`rta_reindex_steer`: RTA's reindex step trained exactly as its parent (same seed, data and
    settings, so the same aggregator), ranking with each user's request in the frozen LLM's prompt:
    the artifact's prompt for the user's query (header, then the same history titles, each ended
    by the separator), then the request line and the separator; the query is the final hidden
    state there, read by a forward of the artifact's backbone at ranking time. A user without a
    request keeps the artifact's query."""

    cfg: SteeredRtaConfig

    def __init__(self, cfg: SteeredRtaConfig, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        self.request_template = cfg.request  # the runner writes one request per ranked user
        self.backbone = None

    def fit(self, split: Split, workdir: Path) -> dict:
        info = super().fit(split, workdir)
        frame = pd.read_parquet(self.states.paths["states.parquet"])
        self.context = {
            (str(u), int(p)): int(c)
            for u, p, c in zip(frame.user_id, frame.position, frame.context, strict=True)
        }
        from llm4rec.llm.identifiers import item_identifiers
        from llm4rec.params import from_params

        self.prompt_config = from_params(StatesConfig, info["states"], "rta_reindex_steer")
        self.titles = item_identifiers(split.items)[0]
        return info | {"request_line": self.cfg.line, "trained_with_requests": False}

    def prompt_ids(self, user: str, history: Sequence[str], request: str) -> list[int]:
        """The artifact's prompt for the user's query after `history`'s last item (its context:
        the items the LLM read there), then the request line and the separator."""
        _, tokenizer = self._backbone()
        cfg = self.prompt_config
        context = self.context[(user, len(history) - 1)]
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids = bos + _tokens(tokenizer, cfg.header)
        for item in list(history)[len(history) - context :]:
            ids += _tokens(tokenizer, self.titles[str(item)]) + _tokens(tokenizer, cfg.separator)
        if request:
            ids += _tokens(tokenizer, self.cfg.line.format(request=request))
            ids += _tokens(tokenizer, cfg.separator)
        return ids

    def _backbone(self):
        if self.backbone is None:
            from llm4rec.llm.backbone import load_backbone

            # the row's own device (a GPU node's), not the one the artifact's job ran on
            cfg = dataclasses.replace(self.prompt_config.backbone, device=self.device)
            self.backbone = load_backbone(cfg)
            self.backbone[0].eval()
        return self.backbone

    @torch.no_grad()
    def request_queries(
        self, users: Sequence[str], histories: Mapping[str, Sequence[str]], requests: Mapping
    ) -> torch.Tensor:
        """[users, d]: the final hidden state of each user's prompt with its request."""
        model, tokenizer = self._backbone()
        prompts = [self.prompt_ids(u, histories[u], requests.get(u, "")) for u in users]
        out = torch.empty((len(users), self.q.shape[1]), device=self.device)
        batches = hidden_states(
            model, tokenizer.pad_token_id, prompts, self.prompt_config.batch_size
        )
        for u, hidden in batches:  # as the artifact's prompts
            out[u] = hidden[len(prompts[u]) - 1].float().to(self.device)
        return out

    def queries(
        self, users: Sequence[str], histories: Histories, requests: Requests = None
    ) -> torch.Tensor:
        q = super().queries(users, histories)
        asked = [u for u in users if (requests or {}).get(u)]
        if asked:
            position = {u: i for i, u in enumerate(users)}
            rows = [position[u] for u in asked]
            q = q.clone()
            q[rows] = self.request_queries(asked, histories, requests)
        return q


def _run_name(source: ResolvedInput) -> str:
    """The display name of the run an input came from ('run sasrec/seed0 (config ...)')."""
    from llm4rec.models import model_title

    parts = source.source.split()
    return model_title(parts[1].split("/")[0]) if len(parts) > 1 else source.source


def _phase_scores(recsys: ResolvedInput, phase: str, n_items: int):
    """({user: row}, [users, items] scores) a baseline run exported for a phase."""
    path = recsys.paths[f"scores_{phase}.npy"]
    matrix = np.load(path)
    users = recsys.paths[f"users_{phase}.txt"].read_text().split()
    if matrix.shape != (len(users), n_items):
        raise ValueError(
            f"{path} (from {recsys.source}): shape {matrix.shape}, expected ({len(users)} users in "
            f"users_{phase}.txt, {n_items} catalogue items)"
        )
    return {u: i for i, u in enumerate(users)}, matrix


def build(spec: BuildSpec) -> ReindexThenAdapt:
    """rta_reindex and its variants; a SteeredRtaConfig (rta_reindex_steer) builds SteeredRta."""
    model = SteeredRta if isinstance(spec.config, SteeredRtaConfig) else ReindexThenAdapt
    states, recsys = spec.inputs["states"], spec.inputs.get("recsys")
    return model(spec.config, spec.seed, spec.device, spec.selection, states, recsys)


train_budget = epochs_budget  # MLflow's budget.train


def estimate_cost(config: RtaConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`. Reindex-Then-Adapt: the aggregator over every title per step (3x for the
    backward) and one matmul per ranked user; the frozen LLM's forward per user is the
    llm_states artifact's row (`artifact_cost`), built once for every RTA row. The steered row
    also runs a forward of the frozen LLM per ranked user, at ranking (it loads the LLM)."""
    states = cell.artifact_params("llm_states", cell.inputs["states"].get("params") or {})
    shape = backbone_shape(states.backbone.name_or_path)
    title, users, items = 12, cell.stats["users"], cell.stats["items"]  # title tokens + separator
    queries = users * max(states.window - 2, 1)
    aggregate = items * title * shape.hidden + items * shape.hidden**2
    step = 3 * (aggregate + 2 * config.batch_size * min(config.batch_size, items) * shape.hidden)
    steps = (config.epochs + config.adapt.epochs) * math.ceil(queries / config.batch_size)
    ranking = aggregate + 2 * users * items * shape.hidden
    estimate = Estimate(
        train_flops=steps * step,
        forward_flops=(config.epochs + config.adapt.epochs + 2) * ranking,
        trainable=shape.hidden**2 + shape.hidden + items,
        small=True,  # the stored states and a d x d map: no backbone loaded
    )
    if isinstance(config, SteeredRtaConfig):
        prompt = 12 + states.window * 12 + 16  # header, titles, the request line
        ranked = cell.test_users + cell.valid_users
        estimate.forward_flops += 2 * shape.params * ranked * prompt
        estimate.small, estimate.weights = False, shape.params  # it loads the LLM itself
    return estimate


def toy_params(params: dict[str, Any], steps: int) -> dict[str, Any]:
    """`llm4rec smoke`: two reindex epochs (the adapt step is cheap)."""
    return params | {"epochs": 2}
