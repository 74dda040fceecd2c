"""MostPop, BPR-MF, LightGCN and SASRec through RecBole 1.2.1, on the harness's split.

The harness owns the split: we hand RecBole pre-split files (``benchmark_filename``), so it
never re-splits, and we rank with our own masking so every model faces the same
candidate set. RecBole traps handled here:
- it parses ``--key=value`` from ``sys.argv``: it runs with a clean argv;
- it writes ``./log`` and ``./log_tensorboard``: it runs inside the run's own folder;
- it pickles its checkpoints (config object included), which torch >= 2.6 refuses to load
  with ``weights_only=True``: we replace its checkpoint writer, keep the best epoch's state in
  memory and load it back after training, so no checkpoint file is written or unpickled;
- its dataset auto-download prompts on stdin: the dataset folder always exists, and the
  dataset name is not one RecBole knows;
- ``item_id_list`` must be aliased to ``item_id`` or its tokens get their own id space;
- its ``Pop`` counts an item once per batch, not per interaction: we set exact counts.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from llm4rec.data.atomic import write_atomic
from llm4rec.data.sources import package_dir
from llm4rec.data.split import Split
from llm4rec.estimates import Cell, Estimate, baseline_estimate, baseline_settings, epochs_budget
from llm4rec.evaluation.evaluate import selection_score
from llm4rec.evaluation.metrics import SELECTION_METRIC, metric_cutoff
from llm4rec.io import write_npy, write_text
from llm4rec.models import RANKING_COLUMNS, BuildSpec
from llm4rec.params import ParamsError

# `sasrec_recbole`: RecBole's own SASRec training (every prefix of every user one example), a
# named variant of `sasrec`, which trains RecBole's network the paper's way (baselines/sasrec.py)
RECBOLE_MODEL = {
    "mostpop": "Pop",
    "bpr": "BPR",
    "lightgcn": "LightGCN",
    "sasrec_recbole": "SASRec",
}
RECBOLE_SOURCE = {
    "mostpop": "general_recommender/pop.py",
    "bpr": "general_recommender/bpr.py",
    "lightgcn": "general_recommender/lightgcn.py",
    "sasrec_recbole": "sequential_recommender/sasrec.py",
}
SEQUENTIAL = {"sasrec_recbole"}
DATASET_NAME = "split"  # the folder/file stem RecBole reads; unknown to RecBole's download list

# Settings every run shares; per-model hyper-parameters come from the grid config.
COMMON = {
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "benchmark_filename": ["train", "valid", "test"],
    "metrics": ["Recall", "MRR", "NDCG", "Hit"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "metric_decimal_place": 10,
    "eval_batch_size": 4096,
    "show_progress": True,
    "save_dataset": False,
    "save_dataloaders": False,
    "log_wandb": False,
    "reproducibility": True,
}


@functools.cache
def yaml_keys(path: Path) -> tuple[str, ...]:
    """The top-level keys of one of RecBole's shipped YAML files, in file order."""
    return tuple(
        line.split(":", 1)[0]
        for line in path.read_text().splitlines()
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*:", line)
    )


def recbole_keys(name: str) -> set[str]:
    """Every config key RecBole 1.2.1 knows for this model: its shipped YAML defaults (overall,
    dataset, sequential quick-start, the model's own) and the keys its model, base class and
    trainer read (`config["..."]`). Read from the package's files, without importing RecBole."""
    root = package_dir("recbole")
    yamls = [
        root / "properties" / "overall.yaml",
        root / "properties" / "dataset" / "sample.yaml",
        root / "properties" / "quick_start_config" / "sequential.yaml",
        root / "properties" / "model" / f"{RECBOLE_MODEL[name]}.yaml",
    ]
    keys = {key for path in yamls for key in yaml_keys(path)}
    sources = [
        root / "model" / RECBOLE_SOURCE[name],
        root / "model" / "abstract_recommender.py",
        root / "trainer" / "trainer.py",
    ]
    for path in sources:
        keys |= set(re.findall(r"config\[[\"']([A-Za-z_][A-Za-z0-9_]*)[\"']\]", path.read_text()))
    return keys | set(COMMON)


def recbole_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check a baseline's params against the keys RecBole knows for it; name an unknown one."""
    known = recbole_keys(name)
    for key in params:
        if key not in known:
            close = sorted(k for k in known if k.lower()[:4] == key.lower()[:4])[:8]
            raise ParamsError(
                f"{name}: unknown parameter '{key}' (not a RecBole 1.2.1 config key for "
                f"{RECBOLE_MODEL[name]}{'; similar: ' + ', '.join(close) if close else ''})"
            )
    return dict(params)


# What a researcher sets for every trained RecBole model (MostPop trains nothing), beside the
# model's own YAML keys.
TRAINING_KEYS = ("epochs", "learning_rate", "train_batch_size", "stopping_step", "weight_decay")


def recbole_hyperparameters(
    name: str, params: dict[str, Any], resolved: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The hyper-parameters a researcher compares for one RecBole model: the keys of its own YAML
    (e.g. LightGCN's n_layers, reg_weight), the trainer's (TRAINING_KEYS), the history length
    (sequential models) and any key the grid sets; each the grid's value, else RecBole's resolved
    one (None when not known yet). RecBole's other ~100 resolved settings (field names, loader
    options) stay in run.json, not in this list."""
    keys = list(
        yaml_keys(package_dir("recbole") / "properties" / "model" / f"{RECBOLE_MODEL[name]}.yaml")
    )
    keys += [] if name == "mostpop" else list(TRAINING_KEYS)
    keys += ["MAX_ITEM_LIST_LENGTH"] if name in SEQUENTIAL else []
    keys += [key for key in params if key not in keys]
    resolved = resolved or {}
    return {key: params[key] if key in params else resolved.get(key) for key in keys}


@contextmanager
def recbole_sandbox(workdir: Path) -> Iterator[None]:
    """Run RecBole with a clean argv and cwd = workdir (its logs land there, not in the repo)."""
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    workdir.mkdir(parents=True, exist_ok=True)
    sys.argv = [sys.argv[0]]
    os.chdir(workdir)
    try:
        yield
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)


def write_benchmark_files(split: Split, data_dir: Path, sequential: bool, max_len: int) -> None:
    """Write `<stem>.{train,valid,test}.inter` for RecBole from the harness's split.

    General models get plain (user, item, timestamp) rows. Sequential models get one row per
    target with the preceding history (last `max_len` items) as `item_id_list`: for train,
    every prefix of the user's training sequence; for valid/test, the history before that
    phase (the same history our ranking uses).
    """
    types = {"user_id": "token", "item_id": "token", "timestamp": "float"}
    for phase in ("train", "valid", "test"):
        rows = split.phase(phase)[["user_id", "item_id", "timestamp"]]
        path = data_dir / f"{DATASET_NAME}.{phase}.inter"
        if not sequential:
            write_atomic(rows, path, types)
            continue
        if phase == "train":
            seq_rows = []
            for user, group in rows.groupby("user_id", sort=False):
                items, times = group["item_id"].tolist(), group["timestamp"].tolist()
                for t in range(1, len(items)):
                    seq_rows.append(
                        (user, " ".join(items[max(0, t - max_len) : t]), items[t], times[t])
                    )
        else:
            history = split.history(phase)
            seq_rows = [
                (u, " ".join(history[u][-max_len:]), i, ts)
                for u, i, ts in rows.itertuples(index=False)
            ]
        frame = pd.DataFrame(seq_rows, columns=["user_id", "item_id_list", "item_id", "timestamp"])
        write_atomic(
            frame,
            path,
            {
                "user_id": "token",
                "item_id_list": "token_seq",
                "item_id": "token",
                "timestamp": "float",
            },
        )


class RecBoleRecommender:
    """One RecBole model behind the harness's Recommender protocol."""

    def __init__(
        self,
        name: str,
        params: dict[str, Any],
        seed: int,
        device: str,
        selection: str = SELECTION_METRIC,
    ):
        self.name, self.params, self.seed, self.device, self.selection = (
            name,
            params,
            seed,
            device,
            selection,
        )
        self.sequential = name in SEQUENTIAL
        self.max_len = int(params.get("MAX_ITEM_LIST_LENGTH", 50))

    def recbole_config(self, data_root: Path) -> dict[str, Any]:
        cfg = COMMON | {
            "data_path": str(data_root),
            "dataset": DATASET_NAME,
            "checkpoint_dir": "checkpoints",
            "seed": self.seed,
            "device": self.device,
            "use_gpu": self.device.startswith("cuda"),
            "eval_args": {
                "group_by": "user",
                "order": "TO",
                "split": {"RS": [0.8, 0.1, 0.1]},
                "mode": "full",
            },
            "load_col": {
                "inter": ["user_id", "item_id", "timestamp"]
                + (["item_id_list"] if self.sequential else [])
            },
        }
        if self.sequential:
            cfg |= {"alias_of_item_id": ["item_id_list"], "train_neg_sample_args": None}
        return cfg | self.params

    def fit(self, split: Split, workdir: Path) -> dict:
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.utils import get_model, get_trainer, init_logger, init_seed

        workdir = Path(workdir).resolve()
        data_root = workdir / "recbole_data"
        write_benchmark_files(split, data_root / DATASET_NAME, self.sequential, self.max_len)
        with recbole_sandbox(workdir / "recbole"):
            config = Config(
                model=RECBOLE_MODEL[self.name],
                dataset=DATASET_NAME,
                config_dict=self.recbole_config(data_root),
            )
            init_seed(config["seed"], config["reproducibility"])
            init_logger(config)
            logging.getLogger().setLevel(logging.INFO)
            dataset = create_dataset(config)
            if dataset.item_num - 1 != len(split.items):  # id 0 is RecBole's padding item
                raise RuntimeError(
                    f"RecBole sees {dataset.item_num - 1} items, the split's catalogue has "
                    f"{len(split.items)}"
                )
            train_data, valid_data, _ = data_preparation(config, dataset)
            init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
            model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
            trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
            self.model, self.dataset, self.config = model, dataset, config
            trainer._valid_epoch = self._protocol_validation(split)
            best: dict = {}
            # its checkpoint writer, called on each new best validation: the state in memory
            # instead of a pickle torch.load would refuse (module docstring)
            trainer._save_checkpoint = lambda epoch, verbose=True, **kw: best.update(
                state_dict={k: v.detach().clone() for k, v in model.state_dict().items()},
                other_parameter=copy.deepcopy(model.other_parameter()),
            )
            best_score, best_result = trainer.fit(
                train_data, valid_data, saved=True, show_progress=config["show_progress"]
            )
            if best:
                model.load_state_dict(best["state_dict"])
                model.load_other_parameter(best["other_parameter"])
        if self.name == "mostpop":
            self._exact_popularity(split)
        model.eval()
        epochs = len(trainer.train_loss_dict)
        return {
            f"best_valid_{self.selection}": float(best_score),
            "selection_metric": self.selection,
            "valid_curve": self.curve,  # one point per validation (every eval_step epochs)
            "epochs_trained": epochs,
            # RecBole keeps no best epoch; it counts evaluations since the best one (cur_step)
            "best_epoch": epochs
            - 1
            - int(getattr(trainer, "cur_step", 0)) * int(config["eval_step"] or 1),
            "parameters_total": sum(p.numel() for p in model.parameters()),
            "parameters_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "recbole_config": {k: _plain(config[k]) for k in sorted(config.final_config_dict)},
        }

    def _exact_popularity(self, split: Split) -> None:
        """Give RecBole's Pop exact training counts.

        Its `item_cnt[item] = item_cnt[item] + 1` increments an item once per *batch* however
        often it occurs in it, so counts depend on the shuffle (seed) and undercount popular
        items. MostPop must rank by training interaction count.
        """
        ds, model = self.dataset, self.model
        counts = split.item_popularity()
        rows = torch.as_tensor(ds.token2id(ds.iid_field, counts.index.tolist()))
        with torch.no_grad():
            model.item_cnt.zero_()
            model.item_cnt[rows, 0] = torch.as_tensor(
                counts.to_numpy(), dtype=model.item_cnt.dtype, device=model.item_cnt.device
            )
            model.max_cnt = torch.max(model.item_cnt, dim=0)[0]

    def inference_cost(self) -> dict[str, float]:
        return {}  # nothing beyond time and memory, which the runner measures

    def _protocol_validation(self, split: Split):
        """Replace RecBole's validation with ours: the protocol's selection metric (default
        NDCG@10) on the valid split.

        RecBole's sequential full-sort evaluation keeps history items as candidates, so early
        stopping on its number would select on a different metric than the one reported.
        """
        history = split.history("valid")
        users = sorted(split.targets("valid"))
        depth = metric_cutoff(self.selection)
        self.curve: list[dict] = []

        def validate(valid_data, show_progress=False):
            self.model.eval()
            score = selection_score(
                self.rank({u: history.get(u, []) for u in users}, depth), split, self.selection
            )
            self.curve.append({"evaluation": len(self.curve) + 1, self.selection: score})
            return score, {self.selection: score}

        return validate

    def _interaction(self, users: list[str], histories: Mapping[str, Sequence[str]]):
        from recbole.data.interaction import Interaction

        ds = self.dataset
        uids = torch.as_tensor(ds.token2id(ds.uid_field, users), dtype=torch.long)
        fields = {ds.uid_field: uids}
        if self.sequential:
            seq = torch.zeros((len(users), self.max_len), dtype=torch.long)
            lengths = torch.zeros(len(users), dtype=torch.long)
            for row, user in enumerate(users):
                recent = list(histories[user])[-self.max_len :]
                if recent:
                    seq[row, : len(recent)] = torch.as_tensor(ds.token2id(ds.iid_field, recent))
                lengths[row] = max(len(recent), 1)
            fields |= {self.model.ITEM_SEQ: seq, self.model.ITEM_SEQ_LEN: lengths}
        return Interaction(fields).to(self.config["device"])

    @torch.no_grad()
    def rank(
        self, histories: Mapping[str, Sequence[str]], k: int, batch_size: int = 256
    ) -> pd.DataFrame:
        ds = self.dataset
        users = sorted(histories)
        out = []
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            scores = (
                self.model.full_sort_predict(self._interaction(batch, histories))
                .view(len(batch), -1)
                .float()
            )
            scores[:, 0] = -torch.inf  # RecBole's padding item
            for row, user in enumerate(batch):
                if histories[user]:
                    scores[
                        row, torch.as_tensor(ds.token2id(ds.iid_field, list(histories[user])))
                    ] = -torch.inf
            # a catalogue may be < k
            top_scores, top_ids = torch.topk(scores, min(k, scores.shape[1]), dim=1)
            items = ds.id2token(ds.iid_field, top_ids.cpu().numpy())
            for row, user in enumerate(batch):
                valid = torch.isfinite(top_scores[row]).cpu().numpy()
                for r in np.flatnonzero(valid):
                    out.append((user, int(r) + 1, str(items[row, r]), float(top_scores[row, r])))
        return pd.DataFrame(out, columns=RANKING_COLUMNS)

    @torch.no_grad()
    def catalogue_scores(
        self, users: list[str], histories: Mapping[str, Sequence[str]], batch_size: int = 256
    ) -> np.ndarray:
        """[users, items] full-catalogue scores (columns in items.parquet order), history not
        excluded: what `rank` sorts."""
        ds = self.dataset
        columns = torch.as_tensor(ds.token2id(ds.iid_field, list(self.catalogue)))
        out = []
        for start in range(0, len(users), batch_size):
            batch = users[start : start + batch_size]
            scores = self.model.full_sort_predict(self._interaction(batch, histories))
            out.append(scores.view(len(batch), -1)[:, columns].float().cpu().numpy())
        return np.concatenate(out)

    def export(self, out_dir: Path, split: Split) -> dict[str, str]:
        """Write trained embeddings, rows in catalogue (split.items) and sorted-user order, and
        each evaluated phase's full-catalogue scores (what a gating model consumes)."""
        ds, model = self.dataset, self.model
        self.catalogue = split.items["item_id"].astype(str).tolist()
        written = {}
        for phase in ("valid", "test"):
            history = split.history(phase)
            users = sorted(split.targets(phase))
            scores = self.catalogue_scores(users, {u: history.get(u, []) for u in users})
            write_npy(out_dir / f"scores_{phase}.npy", scores)
            write_text(out_dir / f"users_{phase}.txt", "\n".join(users) + "\n")
            written[f"scores_{phase}"] = (
                f"scores_{phase}.npy ([users_{phase}.txt, items.parquet order]: full-catalogue "
                f"scores given the {phase} history)"
            )
        with torch.no_grad():
            if self.name == "lightgcn":
                user_emb, item_emb = model.forward()
            elif self.name == "bpr":
                user_emb, item_emb = model.user_embedding.weight, model.item_embedding.weight
            elif self.name == "sasrec_recbole":
                user_emb, item_emb = None, model.item_embedding.weight
            else:
                return written
        item_rows = torch.as_tensor(ds.token2id(ds.iid_field, split.items["item_id"].tolist()))
        item_matrix = item_emb.detach()[item_rows].cpu().numpy()
        write_npy(out_dir / "item_embeddings.npy", item_matrix)
        written["item_embeddings"] = "item_embeddings.npy (rows = items.parquet order)"
        if user_emb is not None:
            users = sorted(split.interactions["user_id"].unique())
            user_rows = torch.as_tensor(ds.token2id(ds.uid_field, users))
            user_matrix = user_emb.detach()[user_rows].cpu().numpy()
            write_npy(out_dir / "user_embeddings.npy", user_matrix)
            write_text(out_dir / "user_ids.txt", "\n".join(users) + "\n")
            written["user_embeddings"] = "user_embeddings.npy (rows = user_ids.txt order)"
        return written


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def build(spec: BuildSpec) -> RecBoleRecommender:
    """`spec.config`: RecBole params, already checked by `recbole_params`."""
    if spec.name not in RECBOLE_MODEL:
        raise KeyError(
            f"'{spec.name}' is not a RecBole baseline (known: {', '.join(RECBOLE_MODEL)})"
        )
    return RecBoleRecommender(spec.name, spec.config, spec.seed, spec.device, spec.selection)


def train_budget(hp: dict[str, Any]) -> str | None:
    """MLflow's budget.train: the epochs of a trained baseline (MostPop trains none)."""
    return epochs_budget(hp) if "epochs" in hp else None


def estimate_cost(config: dict[str, Any], cell: Cell) -> Estimate:
    """`llm4rec plan`: epochs (early stopping's upper bound) x interactions x per-sample work
    (MostPop: counting, none), a score per user and item at ranking."""
    settings = baseline_settings(config)
    hidden = settings.get("embedding_size") or settings.get("hidden_size") or 64
    epochs = settings.get("epochs") or 0
    stats = cell.stats
    interactions, items, users = stats["train_interactions"], stats["items"], stats["users"]
    flops = 0.0
    model = RECBOLE_MODEL.get(cell.model)
    if model == "SASRec":
        # every prefix one example: a forward over up to `length` positions per interaction
        length = min(settings.get("MAX_ITEM_LIST_LENGTH", 50), interactions / users)
        layer = length * (12 * hidden * hidden + 2 * length * hidden)
        per_example = 6 * (settings.get("n_layers", 2) * layer + hidden * items)
        flops = epochs * interactions * per_example
    elif model == "LightGCN":
        batches = math.ceil(interactions / settings.get("train_batch_size", 2048))
        flops = epochs * batches * settings.get("n_layers", 2) * 6 * interactions * hidden
    elif model == "BPR":
        flops = epochs * interactions * 18 * hidden
    return baseline_estimate(settings, cell, flops)


def toy_params(params: dict[str, Any], steps: int) -> dict[str, Any]:
    """`llm4rec smoke`: one epoch, short sequences."""
    params = params | {"epochs": 1, "stopping_step": 1, "show_progress": False}
    if "MAX_ITEM_LIST_LENGTH" in params:
        params["MAX_ITEM_LIST_LENGTH"] = min(params["MAX_ITEM_LIST_LENGTH"], 10)
    return params
