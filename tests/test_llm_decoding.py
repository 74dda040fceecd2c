"""Constrained decoding on a tiny random Llama: beam search against the exhaustive ranking."""

import pytest
import torch

from llm4rec.llm.backbone import LoraSettings, add_lora
from llm4rec.llm.decoding import (
    DecodeStats,
    SharedPrefixStepper,
    constrained_beam_search,
    exhaustive_scores,
    item_token_sequences,
    make_stepper,
)
from llm4rec.llm.trie import ItemTrie

from .helpers import tiny_backbone

TITLES = {
    "1": "the red car",
    "2": "the red car returns",
    "3": "the red house",
    "4": "the blue car",
    "5": "a red car",
    "6": "blue sky",
    "7": "blue sky at night",
    "8": "night of the car",
    "9": "house of blue",
    "10": "a house",
    "11": "sky",
    "12": "the night returns",
}
PROMPTS = [  # (history items, prompt text)
    (["1", "6"], "history : the red car ; blue sky . next :"),
    (["9"], "history : house of blue . next :"),
    (
        ["3", "4", "12", "5"],
        "history : the red house ; the blue car ; the night returns ; a red car . next :",
    ),
]


@pytest.fixture(scope="module")
def setup():
    words = {w for t in TITLES.values() for w in t.split()} | {
        w for _, p in PROMPTS for w in p.split()
    }
    model, tokenizer = tiny_backbone(sorted(words), seed=3, init_std=0.4)
    sequences = item_token_sequences(tokenizer, TITLES)
    tokenizer.padding_side = "left"
    batch = tokenizer([p for _, p in PROMPTS], return_tensors="pt", padding=True)
    return model, tokenizer, sequences, ItemTrie.build(sequences), batch


def exhaustive_top(model, batch, row, sequences, history, k):
    ids = batch.input_ids[row : row + 1, batch.attention_mask[row].bool()]
    scores = exhaustive_scores(model, ids, torch.ones_like(ids), sequences, chunk=5)
    ranked = sorted(((s, i) for i, s in scores.items() if i not in history), reverse=True)
    return [(i, s) for s, i in ranked[:k]]


def test_wide_beam_equals_exhaustive_ranking(setup):
    model, _, sequences, trie, batch = setup
    histories = [h for h, _ in PROMPTS]
    stats = DecodeStats()
    beams = constrained_beam_search(
        model,
        batch.input_ids,
        batch.attention_mask,
        trie,
        beam_width=len(TITLES),
        k=5,
        exclude=histories,
        stats=stats,
    )
    for row, history in enumerate(histories):
        expected = exhaustive_top(model, batch, row, sequences, set(history), 5)
        assert [i for i, _ in beams[row]] == [i for i, _ in expected]
        assert [s for _, s in beams[row]] == pytest.approx([s for _, s in expected], abs=1e-4)
    assert (
        stats.users == 3
        and stats.prompt_tokens == int(batch.attention_mask.sum())
        and stats.steps >= 3
    )


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
    batched = constrained_beam_search(
        model, batch.input_ids, batch.attention_mask, trie, 4, 3, exclude=histories
    )
    for row, history in enumerate(histories):
        mask = batch.attention_mask[row].bool()
        ids = batch.input_ids[row : row + 1, mask]
        alone = constrained_beam_search(
            model, ids, torch.ones_like(ids), trie, 4, 3, exclude=[history]
        )[0]
        assert [i for i, _ in alone] == [i for i, _ in batched[row]]
        assert [s for _, s in alone] == pytest.approx([s for _, s in batched[row]], abs=1e-4)


@pytest.mark.parametrize("beam_width", [3, 4, 6])
def test_every_result_is_a_valid_unseen_catalogue_item(setup, beam_width):
    model, _, _, trie, batch = setup
    histories = [h for h, _ in PROMPTS]
    results = constrained_beam_search(
        model, batch.input_ids, batch.attention_mask, trie, beam_width, 3, exclude=histories
    )
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


def _search(model, batch, decoder, beam_width=6, k=4, stats=None):
    return constrained_beam_search(
        model,
        batch.input_ids,
        batch.attention_mask,
        trie_of(model),
        beam_width,
        k,
        exclude=[h for h, _ in PROMPTS],
        stats=stats,
        decoder=decoder,
    )


def trie_of(model):
    return model._test_trie


@pytest.fixture(scope="module")
def float64_models(setup):
    """The fixture model in float64 (so two attention orders agree to ~1e-12), bare and with LoRA
    adapters whose B matrices are non-zero (so the adapters change the outputs)."""
    import copy

    model, _, _, trie, _ = setup
    bare = copy.deepcopy(model).double()
    lora = add_lora(
        copy.deepcopy(model),
        LoraSettings(rank=2, target_modules=["q_proj", "v_proj", "k_proj", "o_proj"]),
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    lora = lora.double().eval()
    for m in (bare, lora):
        m._test_trie = trie
    return bare, lora


@pytest.mark.parametrize("which", ["bare", "lora"])
def test_shared_prefix_stepper_equals_the_cache_stepper(setup, float64_models, which):
    """The fast path (prompt cache shared by a user's beams in place) computes the same
    log-likelihoods as the generic path (Hugging Face forward with a copied cache per beam),
    on left-padded prompts of different lengths, with and without LoRA adapters."""
    batch = setup[4]
    model = dict(zip(["bare", "lora"], float64_models, strict=True))[which]
    assert isinstance(
        make_stepper(model, batch.input_ids, batch.attention_mask), SharedPrefixStepper
    )
    fast_stats, slow_stats = DecodeStats(), DecodeStats()
    fast = _search(model, batch, "shared_prefix", stats=fast_stats)
    slow = _search(model, batch, "cache", stats=slow_stats)
    for f, s in zip(fast, slow, strict=True):
        assert [i for i, _ in f] == [i for i, _ in s]
        assert [x for _, x in f] == pytest.approx([x for _, x in s], abs=1e-10)
    assert fast_stats == slow_stats


def test_lora_adapters_change_the_decoded_scores(float64_models, setup):
    """Guards the test above: the shared-prefix path must go through the adapters, not around."""
    bare, lora = float64_models
    batch = setup[4]
    a, b = _search(bare, batch, "shared_prefix"), _search(lora, batch, "shared_prefix")
    assert [x for r in a for _, x in r] != pytest.approx([x for r in b for _, x in r], abs=1e-3)


def test_history_slots_count_the_beam_places_history_items_would_take(setup):
    """With no exclusion nothing is scored out; excluding the unconstrained top item makes it
    count as a history slot at the step it would have finished, and it is never returned."""
    model, _, _, trie, batch = setup
    row = batch.input_ids[:1, batch.attention_mask[0].bool()]
    free_stats = DecodeStats()
    free = constrained_beam_search(model, row, torch.ones_like(row), trie, 12, 4, stats=free_stats)[
        0
    ]
    assert free_stats.history_slots == 0 and free_stats.beam_slots > 0
    top = free[0][0]
    stats = DecodeStats()
    held_out = constrained_beam_search(
        model, row, torch.ones_like(row), trie, 12, 3, exclude=[[top]], stats=stats
    )[0]
    assert top not in [i for i, _ in held_out] and [i for i, _ in held_out] == [
        i for i, _ in free[1:4]
    ]
    assert stats.history_slots >= 1 and 0 < stats.history_beam_share < 1
    assert stats.as_dict()["tokens"] == stats.prompt_tokens + stats.decoded_tokens


def test_unknown_decoder_is_refused(setup):
    model, _, _, trie, batch = setup
    with pytest.raises(ValueError, match="decoder 'fast' is not one of auto, shared_prefix, cache"):
        constrained_beam_search(
            model, batch.input_ids, batch.attention_mask, trie, 3, 3, decoder="fast"
        )


def test_shared_prefix_stepper_on_a_qwen2_block_with_attention_biases(setup):
    """Qwen2 (the paper grid's backbone family) has q/k/v biases and its own config class: the
    fast path must match the generic one there too."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    _, tokenizer, _, trie, batch = setup
    torch.manual_seed(1)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        initializer_range=0.4,
    )
    model = Qwen2ForCausalLM(config).double().eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_(0, 0.5)
            layer.self_attn.k_proj.bias.normal_(0, 0.5)
    model._test_trie = trie
    assert isinstance(
        make_stepper(model, batch.input_ids, batch.attention_mask), SharedPrefixStepper
    )
    fast, slow = _search(model, batch, "shared_prefix"), _search(model, batch, "cache")
    assert [[i for i, _ in r] for r in fast] == [[i for i, _ in r] for r in slow]
    assert [x for r in fast for _, x in r] == pytest.approx(
        [x for r in slow for _, x in r], abs=1e-10
    )


class RoutedMLP(torch.nn.Module):
    """A block whose FFN is not the stock one (as an expert split routed by token type would be)."""

    def __init__(self, mlp):
        super().__init__()
        self.inner = mlp

    def forward(self, x):
        return 2 * self.inner(x)


def test_fast_path_is_refused_for_a_modified_block(setup, float64_models):
    """SharedPrefixStepper is used only for the stock classes it re-implements: a replaced FFN (or a
    subclassed layer) falls back to the generic path, and forcing it is an error naming the class;
    LoRA adapters on the projections keep the fast path (tested above for equality)."""
    import copy

    from llm4rec.llm.decoding import CacheStepper, resolve_decoder

    _, lora = float64_models
    assert resolve_decoder(lora) == "shared_prefix"
    model = copy.deepcopy(float64_models[0])
    model.model.layers[1].mlp = RoutedMLP(model.model.layers[1].mlp)
    batch = setup[4]
    assert resolve_decoder(model) == "cache"
    assert isinstance(make_stepper(model, batch.input_ids, batch.attention_mask), CacheStepper)
    with pytest.raises(
        ValueError, match="this model has RoutedMLP where the stock LlamaMLP was expected"
    ):
        resolve_decoder(model, "shared_prefix")
    # and the generic path decodes the modified model right: a wide beam equals exhaustive scoring
    histories = [h for h, _ in PROMPTS]
    beams = constrained_beam_search(
        model,
        batch.input_ids,
        batch.attention_mask,
        trie_of(model),
        len(TITLES),
        4,
        exclude=histories,
    )
    for row, history in enumerate(histories):
        assert [i for i, _ in beams[row]] == [
            i for i, _ in exhaustive_top(model, batch, row, setup[2], set(history), 4)
        ]

    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    class MyLayer(LlamaDecoderLayer):
        pass

    sub = copy.deepcopy(float64_models[0])
    old = sub.model.layers[0]
    sub.model.layers[0] = MyLayer(sub.config, 0).double()
    sub.model.layers[0].load_state_dict(old.state_dict())
    assert resolve_decoder(sub) == "cache"


@pytest.mark.parametrize("decoder", ["shared_prefix", "cache"])
def test_soft_token_prompts_through_prefill_and_decoding(setup, float64_models, decoder):
    """Prompts given as embeddings: the embeddings of the ids themselves decode exactly like the
    ids; with soft vectors put in place, a wide beam still equals exhaustive scoring of the same
    prompt."""
    from llm4rec.llm.prompts import Prompt, left_pad
    from llm4rec.llm.tokens import prompt_embeddings

    model, (_, tokenizer, sequences, trie, batch) = float64_models[0], setup
    histories = [h for h, _ in PROMPTS]
    plain = _search(model, batch, decoder, beam_width=len(TITLES), k=4)
    embeds = prompt_embeddings(model, batch.input_ids, {})
    as_embeds = constrained_beam_search(
        model,
        batch.input_ids,
        batch.attention_mask,
        trie,
        len(TITLES),
        4,
        exclude=histories,
        decoder=decoder,
        inputs_embeds=embeds,
    )
    assert [[i for i, _ in r] for r in as_embeds] == [[i for i, _ in r] for r in plain]
    assert [x for r in as_embeds for _, x in r] == pytest.approx(
        [x for r in plain for _, x in r], abs=1e-10
    )
    torch.manual_seed(5)
    prompts = [
        Prompt(tokenizer(p).input_ids, {0: torch.randn(32, dtype=torch.float64)})
        for _, p in PROMPTS
    ]
    ids, mask, soft = left_pad(prompts, tokenizer.pad_token_id)
    embeds = prompt_embeddings(model, ids, soft)
    beams = constrained_beam_search(
        model,
        ids,
        mask,
        trie,
        len(TITLES),
        4,
        exclude=histories,
        decoder=decoder,
        inputs_embeds=embeds,
    )
    assert [x for r in beams for _, x in r] != pytest.approx(
        [x for r in plain for _, x in r], abs=1e-3
    )
    for row, history in enumerate(histories):
        keep = mask[row].bool()
        scores = exhaustive_scores(
            model,
            ids[row : row + 1, keep],
            torch.ones((1, int(keep.sum())), dtype=torch.long),
            sequences,
            inputs_embeds=embeds[row : row + 1, keep],
        )
        expected = sorted(
            ((s, i) for i, s in scores.items() if i not in set(history)), reverse=True
        )[:4]
        assert [i for i, _ in beams[row]] == [i for _, i in expected]
        # exhaustive sums in fp32
        assert [x for _, x in beams[row]] == pytest.approx([s for s, _ in expected], abs=1e-5)


def sequential_beam_search(logps, trie, beam_width, k, exclude):
    """The search's definition, one candidate at a time (as it was written before it was
    vectorised): per user, the live beams' children above the k-th best finished score, best
    first (ties in generation order); an item finishes, another child goes on while fewer than
    beam_width have and it beats the k-th best finished score so far. `logps(step, users,
    sources, tokens)` gives the next rows' log-probs."""
    n_rows = len(exclude)
    excluded = [trie.excluded_counts(items) for items in exclude]
    finished = [[] for _ in range(n_rows)]
    live = [[(0.0, 0, row)] for row in range(n_rows)]
    logp, step, slots, history_slots, fed = logps(0, None, None, None), 0, 0, 0, 0

    def kth(user):
        scores = sorted((s for s, _ in finished[user]), reverse=True)
        return scores[k - 1] if len(scores) >= k else float("-inf")

    while any(live):
        sources, users, tokens, new_live = [], [], [], [[] for _ in range(n_rows)]
        for user in range(n_rows):
            bound, candidates = kth(user), []
            for score, node, row in live[user]:
                for tok, child in trie.children[node].items():
                    lp = float(logp[row, tok])
                    if score + lp > bound:
                        history = trie.only_excluded(child, excluded[user])
                        candidates.append((score + lp, child, row, tok, history))
            candidates.sort(key=lambda c: -c[0])
            slots += min(len(candidates), beam_width)
            history_slots += sum(c[4] for c in candidates[:beam_width])
            for score, child, row, tok, history in candidates:
                if history:
                    continue
                if trie.is_item(child):
                    finished[user].append((score, trie.item_at[child]))
                elif len(new_live[user]) < beam_width and score > kth(user):
                    new_live[user].append((score, child, len(sources)))
                    sources.append(row)
                    users.append(user)
                    tokens.append(tok)
        live = new_live
        if not sources:
            break
        step, fed = step + 1, fed + len(sources)
        logp = logps(step, torch.tensor(users), torch.tensor(sources), torch.tensor(tokens))
    ranked = [[(i, s) for s, i in sorted(f, key=lambda f: -f[0])[:k]] for f in finished]
    return ranked, (slots, history_slots, fed)


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_search_equals_its_one_candidate_at_a_time_definition(seed):
    """Random catalogues of uneven identifier lengths sharing prefixes, histories, log-probs
    rounded to a coarse grid (many exact ties), beams narrower than the candidates: the same
    items, scores, order and slot counts as the sequential definition above."""
    import numpy as np

    from llm4rec.llm.decoding import DecodeStats, beam_search

    rng = np.random.default_rng(seed)
    vocab, users = 12, 5
    sequences, seen = {}, set()
    while len(sequences) < 60:
        ids = tuple(int(t) for t in rng.integers(4, vocab, size=rng.integers(1, 4)))
        if ids not in seen and not any(ids[: len(o)] == o or o[: len(ids)] == ids for o in seen):
            seen.add(ids)
            sequences[f"i{len(sequences)}"] = [*ids, 3]
    trie = ItemTrie.build(sequences)
    items = list(sequences)
    exclude = [
        list(rng.choice(items, size=rng.integers(0, 15), replace=False)) for _ in range(users)
    ]
    table = torch.log_softmax(
        torch.randn(97, vocab, generator=torch.Generator().manual_seed(seed)), -1
    )
    table = torch.round(table * 2) / 2  # steps of 0.5: ties everywhere

    def logps(step, user, source, token):
        if user is None:
            return table[:users]
        return table[(user * 31 + source * 7 + token * 3 + step) % len(table)]

    class Stepper:
        def __init__(self):
            self.logp, self.index = logps(0, None, None, None), 0

        def step(self, sources, user, tokens):
            self.index += 1
            return logps(self.index, user, sources, tokens)

    for width, k in [(3, 2), (5, 5), (8, 4)]:
        want, counts = sequential_beam_search(logps, trie, width, k, exclude)
        stats = DecodeStats()
        got = beam_search(
            Stepper(), trie, width, k, exclude, stats, torch.ones(users, 1, dtype=torch.long)
        )
        assert got == want
        assert (stats.beam_slots, stats.history_slots, stats.decoded_tokens) == counts
        for ranked, history in zip(got, exclude, strict=True):
            assert not {item for item, _ in ranked} & set(history)
    assert counts[1] > 0  # the histories took beam places in this fixture
