"""Catalogue-constrained decoding: every output is a complete catalogue item, never a history item.

`constrained_beam_search` prefills each prompt once (a batch of users, left-padded), then
decodes with a KV cache: each step feeds one token per live beam, so the cost is the prompt
once plus beams x steps tokens, instead of re-reading the prompt per beam as Hugging Face
`generate(..., prefix_allowed_tokens_fn=...)` effectively does for wide beams. Two steppers
feed the model: `SharedPrefixStepper` (Llama-family models; each user's prompt cache is shared
by its beams in place) and `CacheStepper` (any causal LM; the cache is copied per beam).
Scores are sums of token log-probabilities (no length normalisation), so a finished item's
score is its exact log-likelihood under the prompt; a live beam whose score is already below
the K-th finished score is dropped (scores only decrease), which is exact.

`exhaustive_scores` computes every catalogue item's full log-likelihood (shared prompt
cache, batched continuations): the complete ranking, and the reference beam search is tested
against.

Prompts may be given partly as embeddings (soft tokens, e.g. projected CF vectors): pass
`inputs_embeds` ([rows, T, D], from `llm4rec.llm.tokens.prompt_embeddings`) beside the ids;
the prompt is prefilled from the embeddings, and generated tokens are ordinary ids.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from llm4rec.llm.trie import ItemTrie


@dataclass
class DecodeStats:
    users: int = 0
    prompt_tokens: int = 0  # non-padding prompt tokens prefilled
    decoded_tokens: int = 0  # tokens fed during beam steps
    steps: int = 0
    finished_items: int = 0
    beam_slots: int = 0  # candidate slots of the beams, summed over steps and users
    history_slots: int = (
        0  # of those, slots a history item would have taken had it not been scored out
    )

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.decoded_tokens

    @property
    def history_beam_share(self) -> float:
        return self.history_slots / self.beam_slots if self.beam_slots else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            **dataclasses.asdict(self),
            "tokens": self.tokens,
            "history_beam_share": self.history_beam_share,
        }


def item_token_sequences(
    tokenizer, identifiers: dict[str, str], prefix: str = " "
) -> dict[str, list[int]]:
    """Token ids of each identifier as it follows the prompt, ended by the EOS token."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token to terminate item identifiers")
    return {
        item: tokenizer(prefix + text, add_special_tokens=False).input_ids + [eos]
        for item, text in identifiers.items()
    }


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities in at least float32 (bf16/fp16 logits are upcast first)."""
    return torch.log_softmax(logits.float() if logits.element_size() < 4 else logits, dim=-1)


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class CacheStepper:
    """Any Hugging Face causal LM: one KV cache row per beam, reordered (copied) to the surviving
    beams at every step, prompt included."""

    def __init__(
        self, model, input_ids: Tensor, attention_mask: Tensor, inputs_embeds: Tensor | None = None
    ):
        self.model = model
        out = _prefill(model, input_ids, attention_mask, inputs_embeds)
        self.cache, self.attn = out.past_key_values, attention_mask
        self.next_pos = _positions(attention_mask)[:, -1] + 1
        self.logp = _log_probs(out.logits[:, -1, :])

    def step(
        self, sources: torch.Tensor, users: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        """Feed `tokens` to the beams continuing rows `sources`; next-token log-probs per row."""
        self.cache.batch_select_indices(sources)
        self.attn = torch.cat([self.attn[sources], self.attn.new_ones((len(sources), 1))], dim=1)
        positions = self.next_pos[sources]
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.attn,
            position_ids=positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.next_pos = positions + 1
        return _log_probs(out.logits[:, -1, :])


def _prefill(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, inputs_embeds: torch.Tensor | None
):
    """One forward over the (left-padded) prompts with a cache; logits of the last position only."""
    prompt = (
        {"inputs_embeds": inputs_embeds} if inputs_embeds is not None else {"input_ids": input_ids}
    )
    return model(
        **prompt,
        attention_mask=attention_mask,
        position_ids=_positions(attention_mask),
        use_cache=True,
        logits_to_keep=1,
    )


# The stock classes SharedPrefixStepper re-implements, by model type: (module, class-name prefix).
SHARED_PREFIX_TYPES = {
    "llama": ("transformers.models.llama.modeling_llama", "Llama"),
    "mistral": ("transformers.models.mistral.modeling_mistral", "Mistral"),
    "qwen2": ("transformers.models.qwen2.modeling_qwen2", "Qwen2"),
}


def _decoder_stack(model):
    """The bare decoder-only LM under a peft wrapper (LoRA layers stay in place and apply)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def shared_prefix_mismatch(model) -> str | None:
    """Why SharedPrefixStepper cannot decode this model, or None when it can.

    It re-implements the stock Llama / Mistral / Qwen2 decoder layer by hand, so it applies only
    when the model, its decoder, every layer, attention, MLP and norm are exactly those stock
    classes (a subclass or a replaced block, e.g. an FFN routed by token type, would be decoded
    wrongly with no error), without a sliding window. Projections may carry LoRA adapters.
    """
    import importlib

    base = _decoder_stack(model)
    config = base.config
    if config.model_type not in SHARED_PREFIX_TYPES:
        return f"model type '{config.model_type}' (supported: {', '.join(SHARED_PREFIX_TYPES)})"
    if (
        getattr(config, "use_sliding_window", False)
        or getattr(config, "sliding_window", None) is not None
    ):
        return "a sliding-window attention"
    module_name, prefix = SHARED_PREFIX_TYPES[config.model_type]
    stock = importlib.import_module(module_name)
    lm = getattr(base, "model", None)
    expected = [(base, "ForCausalLM"), (lm, "Model"), (getattr(lm, "norm", None), "RMSNorm")]
    for layer in getattr(lm, "layers", []):
        expected += [
            (layer, "DecoderLayer"),
            (getattr(layer, "self_attn", None), "Attention"),
            (getattr(layer, "mlp", None), "MLP"),
            (getattr(layer, "input_layernorm", None), "RMSNorm"),
            (getattr(layer, "post_attention_layernorm", None), "RMSNorm"),
        ]
    for module, suffix in expected:
        if type(module) is not getattr(stock, prefix + suffix):
            return f"{type(module).__name__} where the stock {prefix}{suffix} was expected"
    return None


class SharedPrefixStepper:
    """Llama-family fast path: each user's prompt keys and values are stored once and read by all
    of that user's beams in place; only the few generated tokens' keys are per beam.

    Attention at a step is split in two (as in cascade / shared-prefix attention): queries of all
    of a user's beams against the user's prompt cache in one batched matmul, and each beam's query
    against its own generated-token cache, joined under one softmax. Nothing the size of the
    prompt is copied per step, which is where the cache stepper spends most of its time on CPU.
    """

    def __init__(
        self, model, input_ids: Tensor, attention_mask: Tensor, inputs_embeds: Tensor | None = None
    ):
        from transformers.models.llama.modeling_llama import (
            apply_rotary_pos_emb,  # same in Mistral and Qwen2
        )

        self.rotate = apply_rotary_pos_emb
        base = _decoder_stack(model)
        self.lm, self.head = base.model, base.lm_head
        config = base.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        out = _prefill(model, input_ids, attention_mask, inputs_embeds)
        self.prompt_k = [layer.keys for layer in out.past_key_values.layers]  # [U, Hkv, P, d] each
        self.prompt_v = [layer.values for layer in out.past_key_values.layers]
        dtype = self.prompt_k[0].dtype
        self.prompt_bias = torch.zeros(attention_mask.shape, dtype=dtype, device=input_ids.device)
        self.prompt_bias.masked_fill_(attention_mask == 0, torch.finfo(dtype).min)
        self.prompt_bias = self.prompt_bias[:, None, None, :]  # [U, 1, 1, P]
        self.prompt_len = attention_mask.sum(dim=1)
        empty = self.prompt_k[0][:, :, :0]
        self.suffix_k = [empty] * len(self.prompt_k)
        self.suffix_v = [empty] * len(self.prompt_k)
        self.generated = 0
        self.logp = _log_probs(out.logits[:, -1, :])

    def _attend(self, q, k, v, layer: int, sources, users, slots, width: int):
        """q: [R, Hkv, g, d] (pre-scaled); k, v: this step's [R, Hkv, 1, d]."""
        rows, kv, group, dim = q.shape
        n_users, prompt = self.prompt_k[layer].shape[0], self.prompt_k[layer].shape[2]
        sk = torch.cat([self.suffix_k[layer][sources], k], dim=2)  # [R, Hkv, S+1, d]
        sv = torch.cat([self.suffix_v[layer][sources], v], dim=2)
        self.suffix_k[layer], self.suffix_v[layer] = sk, sv
        grouped = q.new_zeros((n_users, width, kv, group, dim))  # each user's beams side by side
        grouped[users, slots] = q
        grouped = grouped.permute(0, 2, 1, 3, 4).reshape(n_users, kv, width * group, dim)
        # [U, Hkv, W*g, P]
        scores_p = grouped @ self.prompt_k[layer].transpose(-1, -2) + self.prompt_bias
        scores_p = scores_p.view(n_users, kv, width, group, prompt).permute(0, 2, 1, 3, 4)[
            users, slots
        ]
        scores_s = q @ sk.transpose(-1, -2)  # [R, Hkv, g, S+1]
        scores = torch.cat([scores_p, scores_s], dim=-1)
        probs = torch.softmax(scores.float() if scores.element_size() < 4 else scores, dim=-1).to(
            q.dtype
        )
        probs_p, probs_s = probs.split([prompt, sk.shape[2]], dim=-1)
        spread = probs_p.new_zeros((n_users, width, kv, group, prompt))
        spread[users, slots] = probs_p
        spread = spread.permute(0, 2, 1, 3, 4).reshape(n_users, kv, width * group, prompt)
        out_p = (
            (spread @ self.prompt_v[layer])
            .view(n_users, kv, width, group, dim)
            .permute(0, 2, 1, 3, 4)[users, slots]
        )
        return out_p + probs_s @ sv  # [R, Hkv, g, d]

    def step(
        self, sources: torch.Tensor, users: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        rows = len(tokens)
        first = torch.searchsorted(users, users, side="left")  # rows are grouped by user
        slots = torch.arange(rows, device=users.device) - first
        width = int(slots.max()) + 1
        hidden = self.lm.embed_tokens(tokens)[:, None, :]  # [R, 1, D]
        positions = (self.prompt_len[users] + self.generated)[:, None]
        cos, sin = self.lm.rotary_emb(hidden, positions)
        group, dim = self.heads // self.kv_heads, self.head_dim
        for index, layer in enumerate(self.lm.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(rows, 1, self.heads, dim).transpose(1, 2)
            k = attn.k_proj(x).view(rows, 1, self.kv_heads, dim).transpose(1, 2)
            v = attn.v_proj(x).view(rows, 1, self.kv_heads, dim).transpose(1, 2)
            q, k = self.rotate(q, k, cos, sin)
            # head h reads kv head h // g
            q = q.reshape(rows, self.kv_heads, group, dim) * attn.scaling
            out = self._attend(q, k, v, index, sources, users, slots, width)
            hidden = hidden + attn.o_proj(out.reshape(rows, 1, self.heads * dim))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        self.generated += 1
        logits = self.head(self.lm.norm(hidden)[:, -1, :])
        return _log_probs(logits)


def pick_decoder(
    decoder: str, fast: str, generic: str, mismatch: str | None, fast_reads: str
) -> str:
    """`decoder`: auto (`fast` where the architecture allows it, else `generic`), `fast` (refused,
    naming the `mismatch`, where it does not apply) or `generic`."""
    if decoder not in ("auto", fast, generic):
        raise ValueError(f"decoder '{decoder}' is not one of auto, {fast}, {generic}")
    if decoder == fast and mismatch:
        raise ValueError(
            f"decoder '{fast}' re-implements {fast_reads}; this model has {mismatch}. "
            f"Use decoder 'auto' or '{generic}'"
        )
    return fast if decoder != generic and mismatch is None else generic


def resolve_decoder(model, decoder: str = "auto") -> str:
    """`decoder`: auto (shared_prefix where the architecture allows it, else cache),
    shared_prefix or cache."""
    layers = "the stock Llama, Mistral and Qwen2 layers"
    return pick_decoder(decoder, "shared_prefix", "cache", shared_prefix_mismatch(model), layers)


def make_stepper(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    decoder: str = "auto",
    inputs_embeds: torch.Tensor | None = None,
):
    stepper = (
        SharedPrefixStepper if resolve_decoder(model, decoder) == "shared_prefix" else CacheStepper
    )
    return stepper(model, input_ids, attention_mask, inputs_embeds)


@torch.no_grad()
def constrained_beam_search(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    trie: ItemTrie,
    beam_width: int,
    k: int,
    exclude: Sequence[Sequence[str]] | None = None,
    stats: DecodeStats | None = None,
    decoder: str = "auto",
    inputs_embeds: torch.Tensor | None = None,
) -> list[list[tuple[str, float]]]:
    """Top-k (item, log-likelihood) per prompt row of a causal LM, over catalogue items not in
    that row's `exclude` (see `beam_search`)."""
    if beam_width < k:
        raise ValueError(f"beam_width ({beam_width}) must be >= k ({k})")
    stepper = make_stepper(model, input_ids, attention_mask, decoder, inputs_embeds)
    return beam_search(stepper, trie, beam_width, k, exclude, stats, attention_mask)


@torch.no_grad()
def beam_search(
    stepper,
    trie: ItemTrie,
    beam_width: int,
    k: int,
    exclude: Sequence[Sequence[str]] | None,
    stats: DecodeStats | None,
    attention_mask: torch.Tensor,
) -> list[list[tuple[str, float]]]:
    """Catalogue-constrained beam search over `trie`, driven by a stepper: any object with `logp`
    ([rows, vocab] next-token log-probs after each prompt) and `step(sources, users, tokens)`
    (feed one token to each new beam, continuing row `sources`; returns its next-token log-probs).
    Causal LMs use `make_stepper`; encoder-decoders (e.g. sid_tiger's T5) their own stepper.

    History items are scored out in the trie (a subtree whose every item is in the history is
    never expanded), so the search returns k unseen items; `stats.history_slots` counts the
    beam slots history items would have taken otherwise (their share is logged per run).
    """
    if beam_width < k:
        raise ValueError(f"beam_width ({beam_width}) must be >= k ({k})")
    n_rows = attention_mask.shape[0]
    exclude = exclude if exclude is not None else [()] * n_rows
    edges = trie.edges()
    blocked = trie.blocked_keys(exclude)  # user * nodes + node: every item below it is history
    device = attention_mask.device
    logp = stepper.logp
    stats = stats if stats is not None else DecodeStats()
    stats.users += n_rows
    stats.prompt_tokens += int(attention_mask.sum())
    finished: list[list[tuple[float, str]]] = [[] for _ in range(n_rows)]
    # each user's k best finished scores, descending, -inf where fewer have finished
    best = np.full((n_rows, k), -np.inf)
    # the live beams, user by user, each user's best first: user, score, trie node, stepper row
    users = np.arange(n_rows)
    scores, nodes, rows = np.zeros(n_rows), np.zeros(n_rows, dtype=np.int64), users.copy()
    while len(users):
        # every live beam's trie children; only their log-probs leave the device (one gather)
        first, count = edges.start[nodes], edges.start[nodes + 1] - edges.start[nodes]
        parent = np.repeat(np.arange(len(users)), count)
        edge = first[parent] + np.arange(len(parent)) - np.repeat(np.cumsum(count) - count, count)
        token, child = edges.token[edge], edges.child[edge]
        flat = torch.as_tensor(rows[parent] * logp.shape[1] + token, device=logp.device)
        picked = logp.reshape(-1)[flat].cpu().numpy().astype(np.float64)
        user, score = users[parent], scores[parent] + picked
        # above the user's k-th best finished score, then each user's best first (ties in the
        # order the children were generated: beam, then trie order)
        keep = np.flatnonzero(score > best[user, -1])
        order = keep[np.lexsort((keep, -score[keep], user[keep]))]
        user, score, child, token, source = (
            user[order],
            score[order],
            child[order],
            token[order],
            rows[parent][order],
        )
        rank = np.arange(len(user)) - np.searchsorted(user, user)  # within the user's candidates
        history = np.isin(user * edges.nodes + child, blocked)
        item = edges.is_item[child] & ~history
        stats.beam_slots += int((rank < beam_width).sum())
        stats.history_slots += int((history & (rank < beam_width)).sum())
        # As if a user's candidates were taken best first, one at a time: an item finishes (its
        # score joins the k best), another child goes on while the user has fewer than
        # beam_width new beams and its score beats the k-th best finished so far, i.e. fewer
        # than k finished scores are >= it: those of earlier steps, and the items before it
        # now (all >= it).
        items_before = _within_user_cumsum(user, item) - item
        done_before = (best[user] >= score[:, None]).sum(axis=1)
        grows = ~edges.is_item[child] & ~history & (done_before + items_before < k)
        grows &= _within_user_cumsum(user, grows) <= beam_width
        for at in np.flatnonzero(item):
            finished[user[at]].append((float(score[at]), trie.item_at[int(child[at])]))
        for u in np.unique(user[item]):
            merged = np.concatenate([best[u], score[item & (user == u)]])
            best[u] = -np.sort(-merged)[:k]
        users, scores, nodes = user[grows], score[grows], child[grows]
        rows = np.arange(len(users))
        if not len(users):
            break
        logp = stepper.step(
            torch.as_tensor(source[grows], device=device),
            torch.as_tensor(users, device=device),
            torch.as_tensor(token[grows], device=device),
        )
        stats.decoded_tokens += len(users)
        stats.steps += 1
    results = []
    for user in range(n_rows):
        ranked = sorted(finished[user], key=lambda f: -f[0])[:k]
        stats.finished_items += len(finished[user])
        results.append([(item, score) for score, item in ranked])
    return results


def _within_user_cumsum(user: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Running count of `flags` within each user's run of rows (rows sorted by user)."""
    total = np.cumsum(flags)
    starts = np.searchsorted(user, user)  # each row's user's first row
    return total - (total[starts] - flags[starts])


@torch.no_grad()
def exhaustive_scores(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    sequences: dict[str, list[int]],
    chunk: int = 256,
    inputs_embeds: torch.Tensor | None = None,
) -> dict[str, float]:
    """Log-likelihood of every item's full token sequence after one prompt (input_ids: [1, T])."""
    out = _prefill(model, input_ids, attention_mask, inputs_embeds)
    first_logp = _log_probs(out.logits[0, -1, :])
    start = int(_positions(attention_mask)[0, -1]) + 1
    items = list(sequences)
    scores: dict[str, float] = {}
    for begin in range(0, len(items), chunk):
        batch = items[begin : begin + chunk]
        length = max(len(sequences[i]) for i in batch)
        ids = torch.zeros((len(batch), length), dtype=torch.long, device=input_ids.device)
        valid = torch.zeros((len(batch), length), dtype=torch.bool, device=input_ids.device)
        for row, item in enumerate(batch):
            ids[row, : len(sequences[item])] = torch.as_tensor(sequences[item])
            valid[row, : len(sequences[item])] = True
        cache = copy.deepcopy(out.past_key_values)
        cache.batch_repeat_interleave(len(batch))
        attn = torch.cat([attention_mask.expand(len(batch), -1), valid.long()], dim=1)
        positions = torch.arange(start, start + length, device=input_ids.device).expand(
            len(batch), -1
        )
        cont = model(
            input_ids=ids,
            attention_mask=attn,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        logp = _log_probs(cont.logits)  # logp[:, t] predicts token t + 1
        token_logp = torch.empty_like(ids, dtype=torch.float32)
        token_logp[:, 0] = first_logp[ids[:, 0]]
        if length > 1:
            token_logp[:, 1:] = logp[:, :-1, :].gather(-1, ids[:, 1:, None]).squeeze(-1)
        totals = (token_logp * valid).sum(dim=1)
        scores.update(
            {item: float(total) for item, total in zip(batch, totals.tolist(), strict=True)}
        )
    return scores
