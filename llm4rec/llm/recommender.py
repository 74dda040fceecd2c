"""What every LLM paradigm shares, behind the Recommender protocol.

`LLMRecommender.fit` loads the backbone, lets the paradigm write its items in (`prepare`:
identifiers and a trie, new item or code tokens, ...), and, unless the paradigm trains nothing,
fine-tunes it (LoRA by default) on the paradigm's `training_examples` with the LLM layer's
seeded, resumable, fingerprinted SFT loop, selecting the checkpoint on the grid's validation
metric over a fixed user sample (`llm4rec.llm.selection`). `rank` batches users, left-pads
their prompts (soft tokens become `inputs_embeds`) and lets the paradigm read items out
(`decode`: constrained beam search, or one forward pass over item tokens).

A paradigm subclasses it and supplies only what differs:

    prepare(split) -> dict                      how items are written in and read out; facts to log
    prompt(history) -> Prompt                   one user's prompt
    training_examples(split, rng) -> [example]  what trains (only when `trains`); (ids, labels)
                                                pairs for the default loss
    training_loss() -> LossFn | None            optional: another objective than the backbone's
                                                cross-entropy on labelled tokens
                                                (llm4rec.llm.training)
    decode(ids, mask, inputs_embeds, histories, k) -> [[(item, score)] per row]

What trains is whatever has `requires_grad` after `prepare` (and LoRA, when `lora` is set).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm import tqdm

from llm4rec.data.requests import RequestTraining, request_text
from llm4rec.data.split import Split
from llm4rec.evaluation.evaluate import sample_users
from llm4rec.evaluation.metrics import SELECTION_METRIC
from llm4rec.io import sequence_hash, sha256_file, stable_hash
from llm4rec.llm import distributed, precision
from llm4rec.llm.backbone import BackboneConfig, LoraSettings, add_lora, load_backbone, torch_dtype
from llm4rec.llm.decoding import DecodeStats, constrained_beam_search
from llm4rec.llm.item_scoring import one_forward_costs
from llm4rec.llm.prompts import Prompt, left_pad
from llm4rec.llm.retention import TextRetentionConfig, load_sample, perplexity, retention_costs
from llm4rec.llm.selection import CheckpointSelection
from llm4rec.llm.tokens import prompt_embeddings
from llm4rec.llm.training import LossFn, SFTConfig, next_item_examples, train_sft
from llm4rec.llm.trie import ItemTrie
from llm4rec.models import RANKING_COLUMNS, Histories, Requests, ResolvedInput


@dataclass(frozen=True)
class LLMConfig:
    """Settings every LLM paradigm has; a paradigm's config dataclass extends it."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    lora: LoraSettings | None = field(default_factory=LoraSettings)  # None: full fine-tuning
    sft: SFTConfig = field(default_factory=SFTConfig)
    max_history: int = 10  # a user's last items in a prompt, and per training window
    max_train_examples: int | None = 2000  # a seeded sample of the training examples (None: all)
    batch_users: int = 32  # users ranked together
    valid_users: int = 100  # validation sample for checkpoint selection (sample_users, seed 0)
    eval_every: int = 50
    # perplexity before/after training
    text_retention: TextRetentionConfig = field(default_factory=TextRetentionConfig)
    # train with requests (a seeded share of the windows carry their target's request; a paradigm
    # that reads them): None trains as the paper did, and its steered row is zero-shot
    train_requests: RequestTraining | None = None


def steps_budget(hp: Mapping[str, Any]) -> str:
    """An SFT-trained row's training budget in words (its module's `train_budget`, MLflow's
    budget.train): `sft.steps` optimizer steps, 0 for a zero-shot row."""
    return "0 steps (zero-shot)" if hp.get("zero_shot") else f"{hp['sft.steps']} steps"


Blocked = Sequence[Sequence[str]]  # per prompt row: the items never to recommend
Ranked = list[list[tuple[str, float]]]  # per prompt row: the top-k (item, score), best first


class LLMRecommender:
    """Backbone, training with checkpoint selection, batched ranking, costs (see module doc)."""

    one_forward = False  # ranks every user in one forward pass over item tokens (no beams)
    # writes its selected weights for an RL stage to start from (a catalogue-constrained decoder of
    # item identifiers from a plain token prompt: llm4rec.llm.policy_export)
    exports_policy = False
    # its prompt can carry a user's request (`prompt(history, request)`), e.g. "something from the
    # 1990s: comedy", worded by `request_line` (a steered row sets both: llm4rec.paradigms.steered)
    reads_requests = False
    request_line = "The user asks for {request}."

    def __init__(
        self,
        cfg: LLMConfig,
        seed: int,
        device: str,
        selection: str = SELECTION_METRIC,
        inputs: Mapping[str, ResolvedInput] | None = None,
    ):
        self.cfg, self.seed, self.device, self.selection_metric = cfg, seed, device, selection
        self.inputs = dict(inputs or {})  # consumed files (another run's embeddings, a code table)
        self.decode_stats = DecodeStats()
        self.selection: CheckpointSelection | None = None
        self._reuse_selection = False
        self.loaded_backbone: dict | None = (
            None  # set by load(): the pretrained model, and trust_remote_code
        )
        # the backbone's dtype, set by load() (llm4rec.llm.precision)
        self.compute_dtype = torch.float32

    # -- what a paradigm supplies -------------------------------------------------------------
    @property
    def trains(self) -> bool:
        return True

    @property
    def reads_text(self) -> bool:
        """Whether the model is an LLM whose text perplexity means something (text retention)."""
        return True

    def load(self):
        """(model, tokenizer): the configured pretrained backbone (a paradigm may build its own)."""
        backbone = self.cfg.backbone
        # the run record says what was loaded and whether code shipped with it could run (only when
        # a config says so)
        self.compute_dtype = torch_dtype(backbone.dtype, self.device)
        model, tokenizer = load_backbone(dataclasses.replace(backbone, device=self.device))
        # the commit a hub id resolved to (transformers records it on the config), pinned or not
        self.loaded_backbone = {
            "name_or_path": backbone.name_or_path,
            "gguf_file": backbone.gguf_file,
            "trust_remote_code": bool(backbone.trust_remote_code),
            "revision": backbone.revision,
            "commit": getattr(model.config, "_commit_hash", None),
        }
        return model, tokenizer

    def prepare(self, split: Split) -> dict[str, Any]:
        raise NotImplementedError

    def user_prompt(self, user: str, history: Sequence[str], request: str = "") -> Prompt:
        """One user's ranking prompt: `prompt(history)` (with the user's request, when it has one),
        unless it reads the user too (TIGER)."""
        return self.prompt(history, request) if request else self.prompt(history)

    def request_sentence(self, request: str) -> str:
        """The request as the prompt words it ('' for none)."""
        return self.request_line.format(request=request) if request else ""

    @property
    def request_training(self) -> RequestTraining | None:
        """The request training the config asks for (`train_requests`); None: trained as its
        paper did, without requests. A wrapper (a steered row) reads this, never the config."""
        return self.cfg.train_requests

    def training_requests(self, split: Split) -> Callable[[str], str]:
        """target -> the request its training window's prompt carries: the target's own (written
        as at ranking, from its metadata) for a seeded share (`train_requests.share`) of the
        windows, in the order they are asked for; '' for the rest, and always when the config
        trains without requests."""
        spec = self.request_training
        if spec is None:
            return lambda target: ""
        if not self.reads_requests:
            raise ValueError(f"{type(self).__name__}: train_requests set, but it reads no request")
        self.request_line = spec.line
        items = split.items.set_index(split.items["item_id"].astype(str))
        texts = {item: request_text(row, spec.request) for item, row in items.iterrows()}
        rng = np.random.default_rng([self.seed, 29])  # apart from the windows' own sampling
        return lambda target: texts[str(target)] if rng.random() < spec.share else ""

    def supervises_described(self) -> bool:
        """Whether a training window with a request is supervised only where the request
        describes (`train_requests.supervise`)."""
        spec = self.request_training
        return spec is not None and spec.supervise == "described"

    def request_ids(self, request: str, lead: str = " ", end: str = "") -> list[int]:
        """The request sentence's tokens (text tokens: IDIOMoE routes them to its text expert),
        between `lead` and `end`; [] for no request."""
        sentence = self.request_sentence(request)
        if not sentence:
            return []
        return self.tokenizer(lead + sentence + end, add_special_tokens=False).input_ids

    def prompt(self, history: Sequence[str]) -> Prompt:
        raise NotImplementedError

    def training_examples(
        self, split: Split, rng: np.random.Generator
    ) -> list[tuple[list[int], list[int]]]:
        raise NotImplementedError

    def trainable(self) -> None:
        """Mark what trains beyond LoRA adapters (called after LoRA wrapping froze the rest)."""

    def trainable_tokens(self) -> list[int]:
        """Vocabulary rows whose embeddings train beside LoRA (e.g. added code tokens)."""
        return []

    def training_loss(self) -> LossFn | None:
        return None  # the backbone's cross-entropy on labelled tokens (causal_lm_loss)

    def decode(
        self, ids: Tensor, mask: Tensor, inputs_embeds: Tensor | None, histories: Blocked, k: int
    ) -> Ranked:
        raise NotImplementedError

    # -- the Recommender protocol ----------------------------------------------------------------
    def inference_cost(self) -> dict[str, float]:
        """Decoding counts since the last call (the runner asks once per ranked phase); a
        paradigm that ranks in one forward pass keeps only the counts that mean something there."""
        stats, self.decode_stats = self.decode_stats, DecodeStats()
        return one_forward_costs(stats.as_dict()) if self.one_forward else stats.as_dict()

    def export(self, out_dir: Path, split: Split) -> dict[str, str]:
        """A paradigm an RL stage can start from (`exports_policy`) writes its selected weights
        (`llm4rec.llm.policy_export`)."""
        if not self.exports_policy:
            return {}
        from llm4rec.llm.policy_export import export_policy

        return export_policy(self, out_dir)

    def fit(self, split: Split, workdir: Path) -> dict:
        """Load the backbone and measure its text perplexity; write the items in (`prepare`);
        train with checkpoint selection (a row that trains nothing: frozen); record what ran; then
        measure the perplexity of the trained model on the same text (llm4rec.llm.retention)."""
        self.model, self.tokenizer = self.load()
        sample = self._text_sample()
        before, seconds = self._text_perplexity(sample)
        info = self.prepare(split)
        info |= self._train(split, Path(workdir)) if self.trains else self._freeze()
        info |= self._trained_facts()
        self.model.eval()
        if before is not None:
            # the trained model with its item tokens / experts / adapters; a model that trained
            # nothing is the backbone it was measured as
            after, more = self._text_perplexity(sample) if self.trains else (before, 0.0)
            info["costs"] = info.get("costs", {}) | retention_costs(before, after)
            info["text_retention_seconds"] = seconds + more
        return info

    def _text_sample(self) -> str | None:
        """The pinned text the perplexity is measured on; None for a row that reads no text or
        whose check is off (`text_retention.enabled`)."""
        retention = self.cfg.text_retention if self.reads_text else None
        return (load_sample(retention) or None) if retention and retention.enabled else None

    def _text_perplexity(self, sample: str | None) -> tuple[float | None, float]:
        """(the model's perplexity on `sample` as it is now, seconds taken); None without one."""
        if sample is None:
            return None, 0.0
        start = time.perf_counter()
        with precision.autocast(self.compute_dtype, self.device):
            window = self.cfg.text_retention.window
            value = perplexity(self.model, self.tokenizer, sample, window, self.device)
        return value, time.perf_counter() - start

    def _freeze(self) -> dict:
        """A row that trains nothing (zero-shot): frozen, on its device and dtype."""
        self.inference_setup()
        return {"train_tokens": 0}

    def _trained_facts(self) -> dict:
        """What run.json records of the model as fitted."""
        return {
            "trained_with_requests": self.trains and self.request_training is not None,
            "precision": precision.record(self.model, self.compute_dtype),
            # checkpoint selection's validation rankings
            "decoding_during_fit": self.inference_cost(),
            "backbone": self.loaded_backbone,
            "parameters_total": sum(p.numel() for p in self.model.parameters()),
            "parameters_trainable": (
                sum(p.numel() for p in self.model.parameters() if p.requires_grad)
                if self.trains
                else 0
            ),
        }

    def _train(self, split: Split, workdir: Path) -> dict:
        cfg = self.cfg
        encoded = self.training_setup(split, np.random.default_rng(self.seed))
        sample = sample_users(list(split.targets("valid")), cfg.valid_users, seed=0)
        # everything but the step budget that shapes training: a checkpoint is resumed only under it
        fingerprint = stable_hash(
            {
                "params": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "sft"},
                "seed": self.seed,
                "examples": sequence_hash(encoded),
                "valid_sample": sample,
                "selection": self.selection_metric,
                "inputs": self._input_checksums(),
            }
        )
        self.selection = CheckpointSelection(
            workdir / "sft" / "best.pt",
            fingerprint,
            split,
            sample,
            self.selection_metric,
            cfg.eval_every,
            cfg.sft.steps,
        )
        start = time.perf_counter()
        sft = dataclasses.replace(cfg.sft, seed=self.seed)  # batch order follows the run's seed
        trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        before = {n: p.detach().clone() for n, p in trainable.items()}
        result = train_sft(
            self.model,
            encoded,
            sft,
            self.tokenizer.pad_token_id,
            workdir / "sft",
            self.device,
            on_step=self.selection.on_step(self.model, self._rank_batches),
            fingerprint=fingerprint,
            loss_fn=self.training_loss(),
            compute_dtype=self.compute_dtype,
        )
        # a trainable tensor no step changed is a bug (a detached module, a dtype that rounds
        # updates away); known only for a run that trained from step 0 (a resumed run saw its
        # earlier steps elsewhere)
        fresh = len(result.losses) == cfg.sft.steps
        unmoved = (
            [n for n, p in trainable.items() if torch.equal(p.detach(), before[n])]
            if fresh
            else None
        )
        del before
        self._reuse_selection = self.selection.restore(self.model)
        return {
            "train_examples": len(encoded),
            "trainable_unmoved": unmoved,
            "train_set_tokens": int(sum(len(example[0]) for example in encoded)),
            "train_tokens": result.tokens,
            "sft_steps_run": len(result.losses),
            # per optimiser step run here (a resumed run: after its checkpoint)
            "sft_losses": result.losses,
            "first_loss": result.losses[0] if result.losses else None,
            "final_loss": result.losses[-1] if result.losses else None,
            **self.selection.as_dict(),
            "sft_seconds": time.perf_counter() - start,
        }

    def _input_checksums(self) -> dict[str, dict[str, str]]:
        """sha256 of every consumed file: a checkpoint trained on other inputs is never resumed."""
        return {
            slot: {name: sha256_file(path) for name, path in sorted(resolved.paths.items())}
            for slot, resolved in sorted(self.inputs.items())
        }

    def training_setup(self, split: Split, rng: np.random.Generator) -> list:
        """Wrap the prepared model in LoRA (when set) and return the paradigm's training examples:
        what `_train` trains (also used by benchmarks/perf to time steps without selection)."""
        self.make_trainable()
        return self.training_examples(split, rng)

    def make_trainable(self) -> None:
        """LoRA (when set) and the paradigm's own trainable parts on the prepared model, settled on
        the backbone's device and dtype: the model `_train` trains, and an RL stage restores."""
        if self.cfg.lora is not None:
            self.model = add_lora(self.model, self.cfg.lora, self.trainable_tokens())
            self.trainable()
        # one precision policy for every paradigm: all on the backbone's device, what trains in fp32
        precision.settle(self.model, self.device, self.compute_dtype)

    def inference_setup(self) -> None:
        """A model that trains nothing: frozen, and (with whatever the paradigm added) settled on
        the backbone's device and dtype (llm4rec.llm.precision)."""
        self.model.requires_grad_(False)
        precision.settle(self.model, self.device, self.compute_dtype)

    def rank(self, histories: Histories, k: int, requests: Requests = None) -> pd.DataFrame:
        if requests is not None:
            if not self.reads_requests:
                raise ValueError(
                    f"{type(self).__name__}: its prompt cannot carry a request (reads_requests)"
                )
            return self._rank_batches(histories, k, requests)
        if self._reuse_selection:
            # the selected checkpoint already ranked exactly these users and histories: reuse it
            reused = self.selection.reuse(histories, k)
            if reused is not None:
                return reused
        return self._rank_batches(histories, k)

    @torch.no_grad()
    def _rank_batches(
        self, histories: Histories, k: int, requests: Requests = None
    ) -> pd.DataFrame:
        """Rank in eval mode (no dropout), also mid-training for checkpoint selection; the
        selection callback puts the model back into training mode. `requests`: {user: request}
        put into each user's prompt (a user without one, or with '', gets the plain prompt)."""
        requests = requests or {}
        self.model.eval()
        users = sorted(histories)
        rows = []
        # several processes: each ranks its share of the batches (a user is in the batch it would
        # be in alone)
        batches = distributed.deal(
            [
                users[b : b + self.cfg.batch_users]
                for b in range(0, len(users), self.cfg.batch_users)
            ]
        )
        for batch in tqdm(
            batches, desc=f"rank {len(users)} users", disable=len(batches) < 4, mininterval=10
        ):
            ids, mask, soft = left_pad(
                [self.user_prompt(u, histories[u], requests.get(u, "")) for u in batch],
                self.tokenizer.pad_token_id,
            )
            ids, mask = ids.to(self.device), mask.to(self.device)
            with precision.scoring(self.model, self.compute_dtype, self.device):
                embeds = prompt_embeddings(self.model, ids, soft) if soft else None
                results = self.decode(ids, mask, embeds, [histories[u] for u in batch], k)
            for user, ranked in zip(batch, results, strict=True):
                rows += [(user, r + 1, item, score) for r, (item, score) in enumerate(ranked)]
        frame = distributed.gather_frames(pd.DataFrame(rows, columns=RANKING_COLUMNS))
        return frame.sort_values(["user_id", "rank"], kind="stable").reset_index(drop=True)


class IdentifierDecoder(LLMRecommender):
    """A paradigm that writes the next item's identifier (its title, its code tuple) token by
    token: trained on next-item windows, ranked by catalogue-constrained beam search. Its
    `prepare` sets `sequences` (each item's identifier tokens) and their `trie`; its config has
    `max_history`, `max_train_examples`, `beam_width` and `decoder`."""

    sequences: dict[str, list[int]]
    trie: ItemTrie
    exports_policy = True

    def training_examples(
        self, split: Split, rng: np.random.Generator
    ) -> list[tuple[list[int], list[int]]]:
        """Sliding windows over each user's training sequence (a seeded sample of them): the last
        `max_history` items as the prompt, the next item's identifier as the answer."""
        cfg = self.cfg
        request = self.training_requests(split)
        return next_item_examples(
            split,
            lambda history, target: self.prompt(history, request(target)),
            self.sequences,
            cfg.max_history,
            cfg.max_train_examples,
            rng,
        )

    def decode(
        self, ids: Tensor, mask: Tensor, inputs_embeds: Tensor | None, histories: Blocked, k: int
    ) -> Ranked:
        return constrained_beam_search(
            self.model,
            ids,
            mask,
            self.trie,
            max(self.cfg.beam_width, k),
            k,
            exclude=histories,
            stats=self.decode_stats,
            decoder=self.cfg.decoder,
            inputs_embeds=inputs_embeds,
        )
