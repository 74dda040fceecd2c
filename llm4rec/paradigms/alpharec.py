"""AlphaRec (Sheng et al., ICLR 2025, "Language Representations Can be What Recommenders Need").

No ID embeddings: an item is the frozen language-model embedding z_i of its text (the
`item_text_embeddings` artifact: all-MiniLM-L6-v2 by default, an LLM backbone's mean-pooled
hidden states, or any sentence-transformers model), a user is the mean z over their history.

1. One map shared by users and items sends z into the behaviour space: AlphaRec's 2-layer MLP
   with LeakyReLU, or (`mapping: linear`) the bias-free linear map of the paper's linear-mapping
   probe (RQ1).
2. LightGCN propagation over the training graph: symmetric normalisation D^-1/2 A D^-1/2, K
   layers, the mean of the K + 1 layer outputs (`graph_layers: 0` for the probe).
3. InfoNCE over the cosine of a user and their training item against `negatives` items drawn
   uniformly outside the user's training items, temperature tau; Adam; the epoch with the best
   validation score (the protocol's selection metric) is kept.
4. Ranking: cosine between the user's and every item's final vector, history excluded. At rank
   time a user's input is the mean over the history the protocol gives (train + validation items
   for test); the graph stays the training graph.

User intention (the paper's Table 5; `intention.enabled`): the runner hands rank one request per
user (llm4rec.data.requests: written from the target's genres and decade, or a counterfactual one
that does not come from the target; never a title). It is encoded by the items' encoder, and, as in
the paper, blended into the user's language input before the map and the graph: z~_u = (1 - a)
z_u + a z_request, a chosen on validation over 0, 0.1, ..., 1 with the validation targets'
requests (or `intention.alpha`). Only the user's own request moves its ranking: propagating the
changed input of one user changes that user's final vector by c_u d and every item's by c_iu d
(d the change of the mapped input, c the mean over layers of the graph operator's powers A^k at
(u, u) and (i, u)), computed exactly per user (`intention_scores`), never by propagating every
user's request at once, which would leak one user's request into another's list through shared
items. An earlier version blended the final, propagated vector with alpha 0.5 (not the paper's
placement; removed).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from llm4rec.data.requests import RequestTemplate
from llm4rec.data.split import Split
from llm4rec.estimates import SENTENCE_ENCODER_DIM, Cell, Estimate, backbone_shape, epochs_budget
from llm4rec.evaluation.evaluate import sample_users, selection_score
from llm4rec.evaluation.metrics import metric_cutoff
from llm4rec.io import read_json, write_json
from llm4rec.models import BuildSpec, Histories, Requests, ResolvedInput, ranking_frame

EMBEDDINGS_FILE, ENCODER_FILE = "item_embeddings.npy", "encoder.json"
TRANSFER_FILES = ("alpharec.pt", "alpharec.json")  # what a zero-shot row on another dataset reads
ARCHITECTURE = ("mapping", "mlp_hidden", "dim", "graph_layers")  # must match to load the map
MAPPINGS = ("mlp", "linear")


INTENTION_GRID = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class IntentionConfig:
    enabled: bool = False  # rank with each user's request (the runner writes them)
    # the request's weight in the user's language input (None: chosen on validation over
    # INTENTION_GRID with the validation targets' requests)
    alpha: float | None = None
    request: RequestTemplate = field(default_factory=RequestTemplate)

    def __post_init__(self) -> None:
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"intention.alpha {self.alpha} must be in [0, 1] (or null: chosen)")


@dataclass(frozen=True)
class AlphaRecConfig:
    mapping: str = "mlp"  # mlp (AlphaRec) | linear (the linear-mapping probe)
    mlp_hidden: int = 1536  # AlphaRec's hidden width for its 3072-d encoder (half of it)
    dim: int = 64  # the behaviour space (AlphaRec's embedding size)
    graph_layers: int = 2  # LightGCN layers (0: no propagation)
    tau: float = 0.15  # InfoNCE temperature
    negatives: int = 256  # sampled negatives per (user, item) pair
    batch_size: int = 4096  # (user, item) training pairs per step
    learning_rate: float = 5e-4
    epochs: int = 50  # at most; validation after each epoch
    patience: int = 10  # stop after this many epochs without a better validation score
    valid_users: int = 0  # validation users scored per epoch (0: all)
    intention: IntentionConfig = field(default_factory=IntentionConfig)

    def __post_init__(self) -> None:
        if self.mapping not in MAPPINGS:
            raise ValueError(f"mapping '{self.mapping}' is not one of: {', '.join(MAPPINGS)}")
        if self.graph_layers < 0 or self.negatives < 1 or self.tau <= 0 or self.epochs < 0:
            raise ValueError(
                "graph_layers must be >= 0, negatives >= 1, tau > 0 and epochs >= 0 (got "
                f"{self.graph_layers}, {self.negatives}, {self.tau}, {self.epochs})"
            )


# -- the graph -----------------------------------------------------------------------------------
def normalized_adjacency(
    n_users: int, n_items: int, users: np.ndarray, items: np.ndarray
) -> torch.Tensor:
    """LightGCN's D^-1/2 A D^-1/2 over the user-item graph ([users + items] square, sparse), A the
    symmetric 0/1 adjacency of the (deduplicated) training pairs; an isolated node's row is 0."""
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    rows = np.concatenate([pairs[:, 0], n_users + pairs[:, 1]])
    cols = np.concatenate([n_users + pairs[:, 1], pairs[:, 0]])
    degree = np.bincount(rows, minlength=n_users + n_items).astype(np.float64)
    values = 1.0 / np.sqrt(degree[rows] * degree[cols])
    return torch.sparse_coo_tensor(
        torch.as_tensor(np.stack([rows, cols])),
        torch.as_tensor(values, dtype=torch.float32),
        (n_users + n_items,) * 2,
        check_invariants=True,
    ).coalesce()


def propagate(adjacency: torch.Tensor, x: torch.Tensor, layers: int) -> torch.Tensor:
    """LightGCN: the mean of x, Ax, A^2 x, ..., A^K x."""
    out, total = x, x
    for _ in range(layers):
        out = torch.sparse.mm(adjacency, out)
        total = total + out
    return total / (layers + 1)


# -- the loss ------------------------------------------------------------------------------------
def info_nce(
    users: torch.Tensor,
    items: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """Mean over pairs of -log(exp(c+/tau) / (exp(c+/tau) + sum_j exp(c-_j/tau))), where c+ is the
    cosine of the user (a row of `users`, [B, d]) with its positive item (`positives`: [B] rows of
    `items`, [N, d]) and c-_j with each of its negatives (`negatives`: [B, n] rows of `items`).
    Cosines against the whole catalogue are one matmul; the negatives are gathered from it."""
    cosine = nn.functional.normalize(users, dim=-1) @ nn.functional.normalize(items, dim=-1).T
    logits = torch.cat([cosine.gather(1, positives[:, None]), cosine.gather(1, negatives)], 1) / tau
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


# -- the model -----------------------------------------------------------------------------------
class AlphaRecNet(nn.Module):
    """The map shared by users and items, then propagation over the graph."""

    def __init__(self, in_dim: int, cfg: AlphaRecConfig):
        super().__init__()
        self.layers = cfg.graph_layers
        self.map = (
            nn.Sequential(
                nn.Linear(in_dim, cfg.mlp_hidden),
                nn.LeakyReLU(),
                nn.Linear(cfg.mlp_hidden, cfg.dim),
            )
            if cfg.mapping == "mlp"
            else nn.Linear(in_dim, cfg.dim, bias=False)
        )

    def forward(
        self, user_z: torch.Tensor, item_z: torch.Tensor, adjacency: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mapped = self.map(torch.cat([user_z, item_z]))
        final = propagate(adjacency, mapped, self.layers)
        return final[: len(user_z)], final[len(user_z) :]


def history_means(z: torch.Tensor, histories: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per user: the mean of its history's rows of z (zeros for an empty history)."""
    out = torch.zeros(len(histories), z.shape[1], dtype=z.dtype, device=z.device)
    for row, history in enumerate(histories):
        if len(history):
            out[row] = z[list(history)].mean(0)
    return out


def top_k_by_cosine(
    users: torch.Tensor, items: torch.Tensor, histories: Sequence[Sequence[int]], k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, item rows) of each user's k most similar items outside its history."""
    scores = nn.functional.normalize(users, dim=-1) @ nn.functional.normalize(items, dim=-1).T
    for row, history in enumerate(histories):
        scores[row, list(history)] = -torch.inf
    return torch.topk(scores, min(k, scores.shape[1]), dim=1)


class AlphaRec:
    def __init__(
        self,
        cfg: AlphaRecConfig,
        seed: int,
        device: str,
        selection: str,
        text: ResolvedInput,
        source: ResolvedInput | None = None,
    ):
        self.cfg, self.seed, self.device, self.selection = cfg, seed, device, selection
        self.text, self.source = text, source
        self.request_template = cfg.intention.request if cfg.intention.enabled else None
        self.intention_alpha: float | None = cfg.intention.alpha
        self._request_z: dict[str, torch.Tensor] = {}  # request text -> its encoder embedding

    def fit(self, split: Split, workdir: Path) -> dict:
        path = self.text.paths[EMBEDDINGS_FILE]
        z = np.load(path)
        if z.ndim != 2 or len(z) != len(split.items):
            raise ValueError(
                f"{path} (from {self.text.source}): shape {z.shape}, but this run's catalogue "
                f"(items.parquet) has {len(split.items)} items; the input was built on another one"
            )
        self.items = split.items["item_id"].astype(str).tolist()
        self.row = {item: i for i, item in enumerate(self.items)}
        self.z = torch.tensor(z, dtype=torch.float32, device=self.device)
        train = split.phase("train")
        self.users = sorted(train["user_id"].astype(str).unique())
        self.user_row = {u: i for i, u in enumerate(self.users)}
        user_idx = train["user_id"].astype(str).map(self.user_row).to_numpy()
        item_idx = train["item_id"].astype(str).map(self.row).to_numpy()
        self.adjacency = normalized_adjacency(
            len(self.users), len(self.items), user_idx, item_idx
        ).to(self.device)
        self.train_histories = [[] for _ in self.users]
        for u, i in zip(user_idx, item_idx, strict=True):
            self.train_histories[u].append(int(i))
        torch.manual_seed(self.seed)
        self.model = AlphaRecNet(z.shape[1], self.cfg).to(self.device)
        transfer = self._transfer(z.shape[1]) if self.source is not None else {}
        curve, losses = self._train(split, user_idx, item_idx)
        n_params = sum(p.numel() for p in self.model.parameters())
        intention = self._choose_intention_alpha(split) if self.request_template else {}
        return (
            transfer
            | intention
            | {
                "input": self.text.source,
                "encoder": read_json(self.text.paths[ENCODER_FILE]),
                "epochs": len(losses),
                "best_epoch": self.best_epoch,
                f"best_valid_{self.selection}": self.best_score,
                "valid_curve": curve,  # [{epoch, <selection metric>}]
                "epoch_losses": losses,  # the mean InfoNCE of each epoch
                "parameters_total": n_params,
                "parameters_trainable": n_params,
            }
        )

    def _train(self, split: Split, user_idx: np.ndarray, item_idx: np.ndarray):
        cfg, n_items = self.cfg, len(self.items)
        generator = torch.Generator().manual_seed(self.seed)
        seen = torch.zeros(len(self.users), n_items, dtype=torch.bool)
        seen[torch.as_tensor(user_idx), torch.as_tensor(item_idx)] = True
        pairs = torch.as_tensor(np.stack([user_idx, item_idx], axis=1))
        user_z = history_means(self.z, self.train_histories)
        optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.learning_rate)
        valid_users = sample_users(
            sorted(split.targets("valid")), cfg.valid_users or None, self.seed
        )
        valid_history = split.history("valid")
        valid_histories = {u: valid_history.get(u, []) for u in valid_users}
        cutoff = metric_cutoff(self.selection)
        self.best_score, self.best_epoch, best_state, curve, epoch_losses = -1.0, 0, None, [], []
        stale = 0
        if cfg.epochs == 0:  # untrained or transferred: the weights as they are
            self.best_score = selection_score(
                self.rank(valid_histories, cutoff), split, self.selection, valid_users
            )
            return curve, epoch_losses
        for epoch in range(1, cfg.epochs + 1):
            self.model.train()
            order = pairs[torch.randperm(len(pairs), generator=generator)]
            losses = []
            for begin in range(0, len(order), cfg.batch_size):
                batch = order[begin : begin + cfg.batch_size]
                # sampled on the CPU with the run's generator: the same draws on any device
                negatives = sample_negatives(batch, seen, cfg.negatives, generator)
                batch, negatives = batch.to(self.device), negatives.to(self.device)
                users, items = self.model(user_z, self.z, self.adjacency)
                loss = info_nce(users[batch[:, 0]], items, batch[:, 1], negatives, cfg.tau)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            score = selection_score(
                self.rank(valid_histories, cutoff), split, self.selection, valid_users
            )
            curve.append({"epoch": epoch, self.selection: score})
            epoch_losses.append(float(np.mean(losses)))
            if score > self.best_score:
                self.best_score, self.best_epoch, stale = score, epoch, 0
                best_state = {k: v.clone() for k, v in self.model.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        self.model.load_state_dict(best_state)
        return curve, epoch_losses

    @torch.no_grad()
    def rank(
        self, histories: Histories, k: int, requests: Requests = None, alpha: float | None = None
    ) -> pd.DataFrame:
        """Each user's top k by cosine; with `requests`, each user's request blended into its
        language input with weight `alpha` (default: the chosen one), exactly per user."""
        self.model.eval()
        ranked = sorted(histories)
        rows = [[self.row[i] for i in histories[u]] for u in ranked]
        inputs = [list(h) for h in self.train_histories]
        for user, history in zip(ranked, rows, strict=True):
            if user in self.user_row:
                inputs[self.user_row[user]] = history
        user_z = history_means(self.z, inputs)
        graph_users, items = self.model(user_z, self.z, self.adjacency)
        # a user outside the training graph (none under leave-one-out): its mapped input alone
        alone_z = history_means(self.z, rows)
        alone = self.model.map(alone_z)
        users = torch.stack(
            [
                graph_users[self.user_row[u]] if u in self.user_row else alone[j]
                for j, u in enumerate(ranked)
            ]
        )
        alpha = self.intention_alpha if alpha is None else alpha
        texts = [(requests or {}).get(u, "") for u in ranked]
        if requests is not None and alpha and any(texts):
            scores = self.intention_scores(ranked, texts, alpha, user_z, alone_z, users, items)
            for row, history in enumerate(rows):
                scores[row, list(history)] = -torch.inf
            scores, top = (t.cpu() for t in torch.topk(scores, min(k, scores.shape[1]), dim=1))
        else:
            scores, top = (t.cpu() for t in top_k_by_cosine(users, items, rows, k))
        return ranking_frame(ranked, scores, top, self.items)

    def request_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """[len(texts), d] each request's embedding by the items' encoder (encoder.json), cached
        by text (a few hundred distinct requests cover a dataset's users)."""
        from llm4rec.llm.text_encoders import read_encoder, text_embeddings

        new = sorted({t for t in texts if t and t not in self._request_z})
        if new:
            encoder = read_encoder(self.text.paths[ENCODER_FILE])
            for text, row in zip(new, text_embeddings(new, encoder), strict=True):
                self._request_z[text] = torch.tensor(row, dtype=torch.float32)
        return torch.stack([self._request_z[t] for t in texts]).to(self.device)

    def intention_scores(
        self,
        ranked: Sequence[str],
        texts: Sequence[str],
        alpha: float,
        user_z: torch.Tensor,
        alone_z: torch.Tensor,
        users: torch.Tensor,
        items: torch.Tensor,
    ) -> torch.Tensor:
        """[users, items] cosines after each user's request is blended into its own language
        input alone (module doc): the user's final vector moves by c_u d_u, item i's by c_iu d_u,
        d_u = map(z~_u) - map(z_u)."""
        present = [j for j, t in enumerate(texts) if t]
        request_z = torch.zeros(len(ranked), self.z.shape[1], device=self.device)
        request_z[present] = self.request_embeddings([texts[j] for j in present])
        graph = [self.user_row.get(u) for u in ranked]
        base_z = torch.stack(
            [user_z[g] if g is not None else alone_z[j] for j, g in enumerate(graph)]
        )
        blended = (1 - alpha) * base_z + alpha * request_z
        delta = self.model.map(blended) - self.model.map(base_z)
        has = torch.tensor([bool(t) for t in texts], device=self.device)
        delta = delta * has[:, None]
        # each user's column of (1/(K+1)) sum_k A^k: its weight on itself and on every item
        n_users = len(self.users)
        one_hot = torch.zeros(n_users + len(self.items), len(ranked), device=self.device)
        for j, g in enumerate(graph):
            if g is not None:
                one_hot[g, j] = 1.0
        column = propagate(self.adjacency, one_hot, self.cfg.graph_layers)
        self_weight = torch.stack(
            [column[g, j] if g is not None else column.new_tensor(1.0) for j, g in enumerate(graph)]
        )
        item_weight = column[n_users:].T  # [users, items]
        user_vec = users + self_weight[:, None] * delta
        dots = user_vec @ items.T + item_weight * (user_vec * delta).sum(1, keepdim=True)
        norms_sq = (
            (items * items).sum(1)[None, :]
            + 2 * item_weight * (delta @ items.T)
            + item_weight**2 * (delta * delta).sum(1, keepdim=True)
        )
        return dots / (user_vec.norm(dim=1, keepdim=True) * norms_sq.clamp_min(0).sqrt()).clamp_min(
            1e-12
        )

    def _choose_intention_alpha(self, split: Split) -> dict:
        """The intention weight with the best validation score over INTENTION_GRID, each validation
        user ranking with its validation target's request (or the configured weight)."""
        from llm4rec.data.requests import target_requests

        users = sample_users(
            sorted(split.targets("valid")), self.cfg.valid_users or None, self.seed
        )
        history = split.history("valid")
        histories = {u: history.get(u, []) for u in users}
        texts = target_requests(split, "valid", users, self.request_template)
        cutoff = metric_cutoff(self.selection)
        grid = (
            [self.cfg.intention.alpha] if self.cfg.intention.alpha is not None else INTENTION_GRID
        )
        curve = []
        for alpha in grid:
            ranking = self.rank(histories, cutoff, requests=texts, alpha=alpha)
            curve.append(
                {
                    "alpha": alpha,
                    self.selection: selection_score(ranking, split, self.selection, users),
                }
            )
        best = max(curve, key=lambda point: point[self.selection])  # the first of equal scores
        self.intention_alpha = float(best["alpha"])
        return {
            "intention_alpha_curve": curve,
            "chosen": {"intention_alpha": self.intention_alpha},
            "notes": [f"intention weight {self.intention_alpha:g} chosen on validation"],
        }

    # zero-shot transfer (the paper's Table 4): the map trained on another dataset, applied here
    def export(self, out_dir: Path, split: Split) -> dict[str, str]:
        """The trained map (alpharec.pt) and what it needs to run elsewhere (alpharec.json: its
        config and the encoder of its input space), for a transfer row on another dataset."""
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        tmp = Path(out_dir) / ".alpharec.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(Path(out_dir) / TRANSFER_FILES[0])
        record = {
            "config": dataclasses.asdict(self.cfg),
            "encoder": read_json(self.text.paths[ENCODER_FILE]),
            "input_dim": int(self.z.shape[1]),
            "dataset": split.meta.get("dataset"),
        }
        write_json(Path(out_dir) / TRANSFER_FILES[1], record)
        return {
            "alpharec": "alpharec.pt (the map's weights) + alpharec.json (its config and encoder)"
        }

    def _transfer(self, input_dim: int) -> dict:
        """Load the source run's map; its encoder and architecture must be this run's."""
        record = read_json(self.source.paths[TRANSFER_FILES[1]])
        here = read_json(self.text.paths[ENCODER_FILE])
        if record["encoder"] != here or record["input_dim"] != input_dim:
            raise ValueError(
                f"{self.source.paths[TRANSFER_FILES[1]]} ({self.source.source}): trained on text "
                f"encoded by {record['encoder']} ({record['input_dim']} d), but this dataset's "
                "item "
                f"embeddings ({self.text.source}) come from {here} ({input_dim} d); items are "
                "matched through their text embeddings, so both sides need one encoder"
            )
        ours = dataclasses.asdict(self.cfg)
        for key in ARCHITECTURE:
            if record["config"][key] != ours[key]:
                raise ValueError(
                    f"params.{key} is {ours[key]!r}, but the transferred map "
                    f"({self.source.source}) was trained with {record['config'][key]!r}; give "
                    "this row the source run's params"
                )
        state = torch.load(
            self.source.paths[TRANSFER_FILES[0]], map_location=self.device, weights_only=True
        )
        self.model.load_state_dict(state)
        return {"transferred_from": self.source.source, "source_dataset": record["dataset"]}

    def inference_cost(self) -> dict[str, float]:
        return {}


def sample_negatives(
    pairs: torch.Tensor, seen: torch.Tensor, n: int, generator: torch.Generator, tries: int = 5
) -> torch.Tensor:
    """[B, n] items drawn uniformly from each pair's user's unseen items: uniform draws from the
    catalogue, redrawn where they fall on a training item of the user (`tries` rounds), the few
    left drawn from that user's unseen items directly."""
    users = pairs[:, 0:1].expand(-1, n)
    negatives = torch.randint(seen.shape[1], (len(pairs), n), generator=generator)
    for _ in range(tries):
        clash = seen[users, negatives]
        if not clash.any():
            return negatives
        negatives[clash] = torch.randint(seen.shape[1], (int(clash.sum()),), generator=generator)
    for row, col in seen[users, negatives].nonzero().tolist():
        unseen = (~seen[pairs[row, 0]]).nonzero()[:, 0]
        if len(unseen):
            negatives[row, col] = unseen[torch.randint(len(unseen), (1,), generator=generator)]
    return negatives


def build(spec: BuildSpec) -> AlphaRec:
    text, source = spec.inputs["text"], spec.inputs.get("source")
    return AlphaRec(spec.config, spec.seed, spec.device, spec.selection, text, source)


train_budget = epochs_budget  # MLflow's budget.train


def estimate_cost(config: AlphaRecConfig, cell: Cell) -> Estimate:
    """`llm4rec plan`: per step the map over every user and item, the graph layers and the batch's
    cosines against the catalogue (forward + backward: 3x); a validation ranking after every
    epoch. The epochs are early stopping's upper bound; encoding the item texts is the artifact's
    (once)."""
    encoder = (cell.inputs.get("text") or {}).get("params") or {}
    width = (
        backbone_shape(encoder.get("model", "smollm2-135m-instruct")).hidden
        if encoder.get("kind") == "backbone"
        else SENTENCE_ENCODER_DIM
    )
    stats = cell.stats
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
    return Estimate(
        train_flops=steps * step,
        forward_flops=(config.epochs + 2) * ranking,
        weights=mapped,
        trainable=mapped,
    )


def toy_params(params: dict[str, Any], steps: int) -> dict[str, Any]:
    """`llm4rec smoke`: a narrow map, two epochs."""
    return params | {"epochs": 2, "mlp_hidden": 32}
