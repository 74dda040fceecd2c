"""Constrained decoding on a tiny random Llama: beam search against the exhaustive ranking."""

import pytest
import torch

from llm4rec.llm.backbone import tiny_backbone
from llm4rec.llm.decoding import (
    DecodeStats,
    constrained_beam_search,
    exhaustive_scores,
    item_token_sequences,
)
from llm4rec.llm.trie import ItemTrie

TITLES = {
    "1": "the red car", "2": "the red car returns", "3": "the red house", "4": "the blue car", "5": "a red car",
    "6": "blue sky", "7": "blue sky at night", "8": "night of the car", "9": "house of blue", "10": "a house",
    "11": "sky", "12": "the night returns",
}
PROMPTS = [  # (history items, prompt text)
    (["1", "6"], "history : the red car ; blue sky . next :"),
    (["9"], "history : house of blue . next :"),
    (["3", "4", "12", "5"], "history : the red house ; the blue car ; the night returns ; a red car . next :"),
]


@pytest.fixture(scope="module")
def setup():
    words = {w for t in TITLES.values() for w in t.split()} | {w for _, p in PROMPTS for w in p.split()}
    model, tokenizer = tiny_backbone(sorted(words), seed=3, init_std=0.4)
    sequences = item_token_sequences(tokenizer, TITLES)
    tokenizer.padding_side = "left"
    batch = tokenizer([p for _, p in PROMPTS], return_tensors="pt", padding=True)
    return model, tokenizer, sequences, ItemTrie.build(sequences), batch


def exhaustive_top(model, batch, row, sequences, history, k):
    ids = batch.input_ids[row:row + 1, batch.attention_mask[row].bool()]
    scores = exhaustive_scores(model, ids, torch.ones_like(ids), sequences, chunk=5)
    ranked = sorted(((s, i) for i, s in scores.items() if i not in history), reverse=True)
    return [(i, s) for s, i in ranked[:k]]


def test_wide_beam_equals_exhaustive_ranking(setup):
    model, _, sequences, trie, batch = setup
    histories = [h for h, _ in PROMPTS]
    stats = DecodeStats()
    beams = constrained_beam_search(model, batch.input_ids, batch.attention_mask, trie, beam_width=len(TITLES), k=5,
                                    exclude=histories, stats=stats)
    for row, history in enumerate(histories):
        expected = exhaustive_top(model, batch, row, sequences, set(history), 5)
        assert [i for i, _ in beams[row]] == [i for i, _ in expected]
        assert [s for _, s in beams[row]] == pytest.approx([s for _, s in expected], abs=1e-4)
    assert stats.users == 3 and stats.prompt_tokens == int(batch.attention_mask.sum()) and stats.steps >= 3


def test_exhaustive_scores_are_log_likelihoods(setup):
    """Chunked, cached scoring equals a plain forward pass over prompt + item tokens."""
    model, _, sequences, _, batch = setup
    ids = batch.input_ids[0:1, batch.attention_mask[0].bool()]
    scores = exhaustive_scores(model, ids, torch.ones_like(ids), sequences, chunk=4)
    for item in ("2", "11"):
        full = torch.cat([ids, torch.tensor([sequences[item]])], dim=1)
        logp = torch.log_softmax(model(full).logits.float(), dim=-1)[0]
        n = ids.shape[1]
        expected = sum(float(logp[n - 1 + j, tok]) for j, tok in enumerate(sequences[item]))
        assert scores[item] == pytest.approx(expected, abs=1e-4)


def test_batched_search_equals_one_user_at_a_time(setup):
    model, _, _, trie, batch = setup
    histories = [h for h, _ in PROMPTS]
    batched = constrained_beam_search(model, batch.input_ids, batch.attention_mask, trie, 4, 3, exclude=histories)
    for row, history in enumerate(histories):
        mask = batch.attention_mask[row].bool()
        ids = batch.input_ids[row:row + 1, mask]
        alone = constrained_beam_search(model, ids, torch.ones_like(ids), trie, 4, 3, exclude=[history])[0]
        assert [i for i, _ in alone] == [i for i, _ in batched[row]]
        assert [s for _, s in alone] == pytest.approx([s for _, s in batched[row]], abs=1e-4)


@pytest.mark.parametrize("beam_width", [3, 4, 6])
def test_every_result_is_a_valid_unseen_catalogue_item(setup, beam_width):
    model, _, _, trie, batch = setup
    histories = [h for h, _ in PROMPTS]
    results = constrained_beam_search(model, batch.input_ids, batch.attention_mask, trie, beam_width, 3, exclude=histories)
    for history, ranked in zip(histories, results, strict=True):
        items = [i for i, _ in ranked]
        assert len(items) == 3 == len(set(items))
        assert set(items) <= set(TITLES) and not set(items) & set(history)
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)


def test_beam_narrower_than_k_is_refused(setup):
    model, _, _, trie, batch = setup
    with pytest.raises(ValueError, match=r"beam_width \(2\) must be >= k \(5\)"):
        constrained_beam_search(model, batch.input_ids, batch.attention_mask, trie, 2, 5)
