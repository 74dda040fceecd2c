"""Catalogue-constrained decoding: every output is a complete catalogue item, never a history item.

`constrained_beam_search` prefills each prompt once (a batch of users, left-padded), then
decodes with a KV cache: each step feeds one token per live beam, so the cost is the prompt
once plus beams x steps tokens, instead of re-reading the prompt per beam as Hugging Face
`generate(..., prefix_allowed_tokens_fn=...)` effectively does for wide beams.
Scores are sums of token log-probabilities (no length normalisation), so a finished item's
score is its exact log-likelihood under the prompt; a live beam whose score is already below
the K-th finished score is dropped (scores only decrease), which is exact.

`exhaustive_scores` computes every catalogue item's full log-likelihood (shared prompt
cache, batched continuations): the complete ranking, and the reference beam search is tested
against.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llm4rec.llm.trie import ItemTrie


@dataclass
class DecodeStats:
    users: int = 0
    prompt_tokens: int = 0  # non-padding prompt tokens prefilled
    decoded_tokens: int = 0  # tokens fed during beam steps
    steps: int = 0
    finished_items: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.decoded_tokens


def item_token_sequences(tokenizer, identifiers: dict[str, str], prefix: str = " ") -> dict[str, list[int]]:
    """Token ids of each identifier as it follows the prompt, ended by the EOS token (the terminator)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token to terminate item identifiers")
    return {item: tokenizer(prefix + text, add_special_tokens=False).input_ids + [eos] for item, text in identifiers.items()}


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def constrained_beam_search(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, trie: ItemTrie,
                            beam_width: int, k: int, exclude: Sequence[Sequence[str]] | None = None,
                            stats: DecodeStats | None = None) -> list[list[tuple[str, float]]]:
    """Top-k (item, log-likelihood) per prompt row, over catalogue items not in that row's `exclude`."""
    if beam_width < k:
        raise ValueError(f"beam_width ({beam_width}) must be >= k ({k})")
    n_rows = input_ids.shape[0]
    exclude = exclude if exclude is not None else [()] * n_rows
    excluded = [trie.excluded_counts(items) for items in exclude]
    # logits_to_keep=1: only the last prompt position's next-token distribution is needed
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask),
                use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
    next_pos = _positions(attention_mask)[:, -1] + 1
    attn = attention_mask
    if stats is not None:
        stats.users += n_rows
        stats.prompt_tokens += int(attention_mask.sum())
    finished: list[list[tuple[float, str]]] = [[] for _ in range(n_rows)]
    live = [[(0.0, 0, row)] for row in range(n_rows)]  # (score, trie node, cache row)
    while any(live):
        sources, tokens, new_live = [], [], [[] for _ in range(n_rows)]
        logp_cpu = logp.cpu()
        for user in range(n_rows):
            bound = _kth(finished[user], k)
            candidates = []
            for score, node, row in live[user]:
                allowed = trie.allowed(node, excluded[user])
                if not allowed:
                    continue
                toks = list(allowed)
                for tok, lp in zip(toks, logp_cpu[row, toks].tolist(), strict=True):
                    if score + lp > bound:
                        candidates.append((score + lp, allowed[tok], row, tok))
            candidates.sort(key=lambda c: -c[0])
            for score, child, row, tok in candidates:
                if trie.is_item(child):
                    finished[user].append((score, trie.item_at[child]))
                elif len(new_live[user]) < beam_width and score > _kth(finished[user], k):
                    new_live[user].append((score, child, len(sources)))
                    sources.append(row)
                    tokens.append(tok)
        live = new_live
        if not sources:
            break
        index = torch.as_tensor(sources, device=input_ids.device)
        cache.batch_select_indices(index)
        attn = torch.cat([attn[index], attn.new_ones((len(sources), 1))], dim=1)
        positions = next_pos[index]
        out = model(input_ids=torch.as_tensor(tokens, device=input_ids.device)[:, None], attention_mask=attn,
                    position_ids=positions[:, None], past_key_values=cache, use_cache=True)
        logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        next_pos = positions + 1
        if stats is not None:
            stats.decoded_tokens += len(sources)
            stats.steps += 1
    results = []
    for user in range(n_rows):
        ranked = sorted(finished[user], key=lambda f: -f[0])[:k]
        if stats is not None:
            stats.finished_items += len(finished[user])
        results.append([(item, score) for score, item in ranked])
    return results


def _kth(finished: list[tuple[float, str]], k: int) -> float:
    if len(finished) < k:
        return float("-inf")
    return sorted((f[0] for f in finished), reverse=True)[k - 1]


@torch.no_grad()
def exhaustive_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, sequences: dict[str, list[int]],
                      chunk: int = 256) -> dict[str, float]:
    """Log-likelihood of every item's full token sequence after one prompt (input_ids: [1, T])."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask),
                use_cache=True, logits_to_keep=1)
    first_logp = torch.log_softmax(out.logits[0, -1, :].float(), dim=-1)
    start = int(_positions(attention_mask)[0, -1]) + 1
    items = list(sequences)
    scores: dict[str, float] = {}
    for begin in range(0, len(items), chunk):
        batch = items[begin:begin + chunk]
        length = max(len(sequences[i]) for i in batch)
        ids = torch.zeros((len(batch), length), dtype=torch.long, device=input_ids.device)
        valid = torch.zeros((len(batch), length), dtype=torch.bool, device=input_ids.device)
        for row, item in enumerate(batch):
            ids[row, : len(sequences[item])] = torch.as_tensor(sequences[item])
            valid[row, : len(sequences[item])] = True
        cache = copy.deepcopy(out.past_key_values)
        cache.batch_repeat_interleave(len(batch))
        attn = torch.cat([attention_mask.expand(len(batch), -1), valid.long()], dim=1)
        positions = torch.arange(start, start + length, device=input_ids.device).expand(len(batch), -1)
        cont = model(input_ids=ids, attention_mask=attn, position_ids=positions, past_key_values=cache, use_cache=True)
        logp = torch.log_softmax(cont.logits.float(), dim=-1)  # logp[:, t] predicts token t + 1
        token_logp = torch.empty_like(ids, dtype=torch.float32)
        token_logp[:, 0] = first_logp[ids[:, 0]]
        if length > 1:
            token_logp[:, 1:] = logp[:, :-1, :].gather(-1, ids[:, 1:, None]).squeeze(-1)
        totals = (token_logp * valid).sum(dim=1)
        scores.update({item: float(total) for item, total in zip(batch, totals.tolist(), strict=True)})
    return scores
