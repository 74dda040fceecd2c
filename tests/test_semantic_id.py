"""The semantic-ID paradigm: quantizers, unique tuples, the code trie, the ml-100k coherence check,
TIGER's T5 (decoding parity, valid unseen distinct rankings, resume) and sid_llm on a tiny Llama."""

import itertools

import numpy as np
import pytest
import torch
import yaml

from llm4rec.config import load_grid
from llm4rec.evaluation.evaluate import evaluate_rankings
from llm4rec.llm.decoding import beam_search
from llm4rec.llm.seq2seq import Seq2SeqStepper, T5SharedEncoderStepper
from llm4rec.llm.training import training_windows
from llm4rec.llm.trie import ItemTrie
from llm4rec.models import MODELS, ResolvedInput, build_model
from llm4rec.paradigms.semantic_id import quantizers
from llm4rec.paradigms.semantic_id.codes import (
    CodeVocabulary,
    SemanticIdConfig,
    build_semantic_ids,
    codebook_usage,
    disambiguate,
    first_code_coherence,
)
from llm4rec.runner import build_artifact, prepare_dataset

from .helpers import tiny_backbone
from .helpers.idiomoe import TITLES, WORDS, cyclic_split
from .helpers.tiger import TINY_T5


def clustered(n_per=40, centers=6, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 5, (centers, dim))
    labels = np.repeat(np.arange(centers), n_per)
    return means[labels] + rng.normal(0, 0.5, (len(labels), dim)), labels


# -- the item tokenizer --------------------------------------------------------------------------
def test_kmeans_recovers_separated_clusters():
    x, labels = clustered()
    centroids = quantizers.kmeans(x, 6, seed=0)
    assign = ((x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    # the same partition as the generating labels (up to renaming the clusters)
    assert all(len(set(assign[labels == c])) == 1 for c in range(6)) and len(set(assign)) == 6
    with pytest.raises(ValueError, match="codebook size 300 exceeds the 240 vectors"):
        quantizers.kmeans(x, 300)


def test_residual_quantizers_reduce_reconstruction_error():
    x, _ = clustered()
    rq = quantizers.rq_kmeans(x, levels=3, codebook_size=8, seed=0)
    assert rq.codes.shape == (240, 3)
    errors = [rq.baseline_error, *rq.reconstruction_error]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors  # every level explains more
    # the error is the one a reconstruction by the chosen centroids has, computed here by hand
    recon = sum(book[rq.codes[:, level]] for level, book in enumerate(rq.codebooks))
    assert np.isclose(((x - recon) ** 2).sum(1).mean(), rq.reconstruction_error[-1])
    untrained = quantizers.rq_vae(x, 3, 8, hidden=(32,), latent_dim=4, epochs=0, seed=0)
    trained = quantizers.rq_vae(
        x, 3, 8, hidden=(32,), latent_dim=4, epochs=150, batch_size=64, seed=0
    )
    assert trained.reconstruction_error[-1] < 0.5 * untrained.reconstruction_error[-1]
    assert trained.reconstruction_error[-1] < trained.baseline_error
    assert trained.codes.shape == (240, 3) and trained.codes.max() < 8


def test_disambiguation_gives_every_item_a_unique_tuple():
    codes = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [2, 2]])
    unique, facts = disambiguate(codes)
    assert unique[:, -1].tolist() == [0, 1, 0, 2, 0]
    assert len({tuple(r) for r in unique.tolist()}) == 5
    assert facts == {
        "collision_rate": 3 / 5,
        "items_colliding": 3,
        "tuples_shared": 1,
        "max_items_per_tuple": 3,
        "disambiguation_size": 3,
    }


def test_codebook_usage_and_coherence_by_hand():
    usage = codebook_usage(np.array([[0], [0], [1], [1]]), codebook_size=4)
    assert usage == [{"level": 1, "used": 0.5, "perplexity": pytest.approx(2.0)}]
    genres = [{"a"}, {"a", "b"}, {"c"}, {"c"}, set()]
    # pairs with genres: (0,1) share, (0,2) (0,3) (1,2) (1,3) do not, (2,3) share -> 2 of 6
    coherence = first_code_coherence(np.array([7, 7, 9, 9, 7]), genres)
    assert coherence["random_pair_genre_rate"] == pytest.approx(2 / 6)
    assert (
        coherence["same_first_code_pairs"] == 2 and coherence["same_first_code_genre_rate"] == 1.0
    )


def test_code_trie_admits_exactly_the_catalogue():
    codes, _ = disambiguate(np.random.default_rng(0).integers(0, 3, (40, 2)))
    vocab = CodeVocabulary.of(codes)
    tokens = vocab.tokens(codes)
    trie = ItemTrie.build({str(i): row.tolist() for i, row in enumerate(tokens)})

    def leaves(node=0, path=()):
        if trie.is_item(node):
            yield path, trie.item_at[node]
        for token, child in trie.children[node].items():
            yield from leaves(child, (*path, token))

    found = dict(leaves())
    assert sorted(found.values(), key=int) == [str(i) for i in range(40)]
    assert all(list(path) == tokens[int(item)].tolist() for path, item in found.items())
    # a token's id says its level: the same code at two levels is two tokens
    assert len(vocab) == 2 + sum(vocab.sizes) and tokens[:, 0].max() < tokens[:, 1].min()


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sid")
    # RQ-VAE: test_rq_vae_*
    kmeans = {"codes": {"artifact": "semantic_ids", "params": {"quantizer": "rq_kmeans"}}}
    models = [{"name": "sid_tiger", "inputs": kmeans}, {"name": "sid_random"}]
    cfg = {
        "name": "sid",
        "seeds": [0],
        "results_dir": str(tmp / "results"),
        "datasets": {"ml-100k": {"source": "ml-100k"}},
        "models": models,
    }
    (tmp / "grid.yaml").write_text(yaml.safe_dump(cfg))
    grid = load_grid(tmp / "grid.yaml")
    split = prepare_dataset(grid, "ml-100k")
    return grid, split


def test_semantic_ids_of_ml100k_are_unique_and_genre_coherent(ml100k, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    grid, split = ml100k
    records = {
        name: build_artifact(grid, "ml-100k", name, key) for (_, name, key) in grid.artifacts()
    }
    # sid_tiger's and sid_random's
    assert len(grid.artifacts()) == 2 and set(records) == {"semantic_ids"}
    by_quantizer = {}
    for source in grid.artifacts().values():
        codes = np.load(source.folder / "codes.npy")
        stats = yaml.safe_load((source.folder / "codebook_stats.json").read_text())
        assert codes.shape == (1349, 4) and len({tuple(r) for r in codes.tolist()}) == 1349
        by_quantizer[stats["quantizer"]] = stats
    learned, random = by_quantizer["rq_kmeans"], by_quantizer["random"]
    # items sharing a first code share a genre far more often than random pairs; random codes do not
    assert (
        learned["coherence"]["same_first_code_genre_rate"]
        > 1.5 * learned["coherence"]["random_pair_genre_rate"]
    )
    assert random["coherence"]["ratio"] < 1.15
    assert learned["reconstruction_error"][0] < learned["baseline_error"]
    assert all(level["used"] > 0.9 for level in learned["codebook"])


# -- TIGER's T5 ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_codes(tmp_path_factory):
    split = cyclic_split([8] * len(TITLES))
    folder = tmp_path_factory.mktemp("codes")
    build_semantic_ids(
        split, SemanticIdConfig(quantizer="random", levels=2, codebook_size=4), 0, folder
    )
    return split, ResolvedInput(
        {"codes.npy": folder / "codes.npy", "codebook_stats.json": folder / "codebook_stats.json"},
        "fixture",
    )


def test_t5_shared_encoder_stepper_equals_the_models_own_decoder():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(
        T5Config(
            vocab_size=30,
            d_model=16,
            d_ff=32,
            num_heads=2,
            d_kv=8,
            num_layers=2,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    ids = torch.randint(2, 30, (3, 6))
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = 0, 0  # left padding
    with torch.no_grad():
        steppers = [T5SharedEncoderStepper(model, ids, mask), Seq2SeqStepper(model, ids, mask)]
        outs = [
            s.step(torch.tensor([0, 0, 2]), torch.tensor([0, 0, 2]), torch.tensor([5, 6, 7]))
            for s in steppers
        ]
        outs = [
            s.step(torch.tensor([1, 2]), torch.tensor([0, 2]), torch.tensor([9, 9]))
            for s in steppers
        ]
        for row, (user, prefix) in enumerate([(0, [6, 9]), (2, [7, 9])]):
            logits = model(
                input_ids=ids[user : user + 1],
                attention_mask=mask[user : user + 1],
                decoder_input_ids=torch.tensor([[0, *prefix]]),
            ).logits[0, -1]
            for out in outs:
                torch.testing.assert_close(
                    out[row], torch.log_softmax(logits, -1), rtol=0, atol=1e-5
                )


def test_beam_search_over_codes_returns_valid_distinct_unseen_items(tiny_codes, tmp_path):
    split, codes = tiny_codes
    rec = build_model("sid_tiger", TINY_T5, seed=0, device="cpu", inputs={"codes": codes})
    info = rec.fit(split, tmp_path)
    assert (
        info["code_length"] == 3
        and info["decoder"] == "shared_encoder"
        and info["best_step"] in (60, 120)
    )
    histories = {u: list(h) for u, h in split.history("test").items()}
    ranked = rec.rank(histories, k=5)
    # refuses history or unknown items, duplicates, short lists
    evaluate_rankings(ranked, split, "test", [5])
    for user, group in ranked.groupby("user_id"):
        assert len(set(group["item_id"])) == 5 and not set(group["item_id"]) & set(histories[user])
    # an unbounded beam is exact: it equals every item's log-likelihood under teacher forcing
    rec.model.eval()
    user = sorted(histories)[0]
    # TIGER's: the user's token, then the codes
    prompt = torch.tensor([rec.user_prompt(user, histories[user]).ids])
    full = {}
    for item, tokens in rec.sequences.items():
        if item in histories[user]:
            continue
        with torch.no_grad():
            logits = rec.model(
                input_ids=prompt, decoder_input_ids=torch.tensor([[0, *tokens[:-1]]])
            ).logits[0]
        full[item] = float(torch.log_softmax(logits, -1)[torch.arange(len(tokens)), tokens].sum())
    with torch.no_grad():
        stepper = T5SharedEncoderStepper(rec.model, prompt, torch.ones_like(prompt))
        exact = beam_search(
            stepper, rec.trie, 16, 5, [histories[user]], None, torch.ones_like(prompt)
        )[0]
    expected = sorted(full.items(), key=lambda kv: -kv[1])[:5]
    assert [i for i, _ in exact] == [i for i, _ in expected]
    assert np.allclose([s for _, s in exact], [s for _, s in expected], atol=1e-4)
    mine = ranked[ranked.user_id == user].sort_values("rank")
    assert list(mine.item_id) == [i for i, _ in exact]  # rank() reads the same user-token prompt
    assert np.allclose(mine.score, [s for _, s in exact], atol=1e-4)


def test_tiger_prepends_the_users_hashed_token_as_the_paper_does(tiny_codes):
    """TIGER hashes the user id into 2000 tokens (the default), placed first in the encoder input,
    after the code vocabulary; crc32 makes it the same in every process. user_buckets: 0 leaves it
    out."""
    import zlib

    from llm4rec.models import check_params

    split, codes = tiny_codes
    assert check_params(MODELS["sid_tiger"], {}).user_buckets == 2000
    rec = build_model("sid_tiger", TINY_T5, seed=0, device="cpu", inputs={"codes": codes})
    rec.model, _ = rec.load()
    rec.prepare(split)
    assert rec.model.config.vocab_size == len(rec.vocab) + 2000
    history = ["1", "2"]
    assert rec.user_prompt("u7", history).ids == [
        len(rec.vocab) + zlib.crc32(b"u7") % 2000,
        *rec.prompt(history).ids,
    ]
    examples = rec.training_examples(split, np.random.default_rng(0))
    windows = training_windows(split, rec.cfg.max_history, None, np.random.default_rng(0))
    assert [ids[0] for ids, _ in examples] == [rec.user_token(user) for user, _, _ in windows]
    plain = build_model(
        "sid_tiger", {**TINY_T5, "user_buckets": 0}, seed=0, device="cpu", inputs={"codes": codes}
    )
    plain.model, _ = plain.load()
    plain.prepare(split)
    assert plain.user_prompt("u7", history).ids == plain.prompt(history).ids
    assert plain.model.config.vocab_size == len(plain.vocab)


def test_sid_tiger_learns_the_cyclic_pattern_and_resumes_exactly(tiny_codes, tmp_path):
    split, codes = tiny_codes
    whole = build_model("sid_tiger", TINY_T5, seed=0, device="cpu", inputs={"codes": codes})
    whole.fit(split, tmp_path / "whole")
    # users walk the catalogue cyclically: the next item after the history's last is learnable
    histories = {u: list(h) for u, h in split.history("test").items()}
    ranked = whole.rank(histories, k=1)
    truth = {user: items[0] for user, items in split.targets("test").items()}
    hits = sum(
        item == truth[user] for user, item in zip(ranked["user_id"], ranked["item_id"], strict=True)
    )
    assert hits / len(truth) > 0.5, hits  # chance: 1 in 9 unseen items
    half = build_model(
        "sid_tiger",
        {**TINY_T5, "sft": {**TINY_T5["sft"], "steps": 60}},
        seed=0,
        device="cpu",
        inputs={"codes": codes},
    )
    half.fit(split, tmp_path / "resumed")
    resumed = build_model("sid_tiger", TINY_T5, seed=0, device="cpu", inputs={"codes": codes})
    assert resumed.fit(split, tmp_path / "resumed")["sft_steps_run"] == 60
    last = [
        torch.load(d / "sft" / "last" / "state.pt", weights_only=True)
        for d in (tmp_path / "whole", tmp_path / "resumed")
    ]
    for name, value in last[0]["trainable"].items():
        torch.testing.assert_close(value, last[1]["trainable"][name], rtol=0, atol=1e-6)
    assert (whole.selection.step, whole.selection.score) == (
        resumed.selection.step,
        resumed.selection.score,
    )


# -- sid_llm on a tiny Llama -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    model, tokenizer = tiny_backbone(WORDS, seed=0, init_std=0.1, layers=2)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    folder = tmp_path_factory.mktemp("llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def word_level_tokenizer(monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "AutoTokenizer", transformers.PreTrainedTokenizerFast)


def test_sid_llm_trains_only_new_code_rows_and_lora_and_decodes_valid_items(
    tiny_codes, tiny_llama, tmp_path, word_level_tokenizer
):
    split, codes = tiny_codes
    params = {
        "backbone": {"name_or_path": str(tiny_llama)},
        "prompt": {"user": "items :\n{history}", "line": "{title} {item}\n", "answer_prefix": ":"},
        "max_history": 3,
        "beam_width": 5,
        "text_retention": {"enabled": False},
        "sft": {"steps": 6, "batch_size": 4, "learning_rate": 1e-2},
        "valid_users": 8,
        "eval_every": 3,
    }
    rec = build_model("sid_llm", params, seed=0, device="cpu", inputs={"codes": codes})
    from llm4rec.llm.backbone import BackboneConfig, load_backbone

    original = (
        load_backbone(BackboneConfig(name_or_path=str(tiny_llama)))[0]
        .get_input_embeddings()
        .weight.detach()
        .clone()
    )
    info = rec.fit(split, tmp_path)
    assert info["code_tokens"] == len(rec.code_ids) and info["decoder"] == "shared_prefix"
    # the prompt: its head, a line per item (its title and a space, its codes, a newline), the
    # answer prefix, each piece tokenized on its own
    from llm4rec.llm.identifiers import item_identifiers

    titles, encode = item_identifiers(split.items)[0], lambda text: rec.tokenizer(text).input_ids
    lines = [encode(titles[i] + " ") + rec.sequences[i] + encode("\n") for i in ("1", "2")]
    assert rec.prompt(["1", "2"]).ids == encode("items :\n") + sum(lines, []) + encode(":")
    trained = {n for n, p in rec.model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or "trainable_tokens" in n for n in trained)
    weights = rec.model.get_input_embeddings()
    merged = weights(torch.arange(original.shape[0] + len(rec.code_ids)))
    # the text vocabulary is untouched
    torch.testing.assert_close(merged[: original.shape[0]], original, rtol=0, atol=0)
    assert not torch.allclose(
        merged[rec.code_ids], merged[rec.code_ids].mean(0).expand(len(rec.code_ids), -1)
    )
    histories = {u: list(h) for u, h in split.history("test").items()}
    ranked = rec.rank(histories, k=5)
    evaluate_rankings(ranked, split, "test", [5])
    # the shared-prefix fast path and the generic cache decode the peft-wrapped model alike
    prompts = [rec.prompt(histories[u]).ids for u in sorted(histories)[:3]]
    from llm4rec.llm.decoding import constrained_beam_search
    from llm4rec.llm.prompts import Prompt, left_pad

    ids, mask, _ = left_pad([Prompt(p) for p in prompts], rec.tokenizer.pad_token_id)
    fast = constrained_beam_search(rec.model, ids, mask, rec.trie, 5, 5, decoder="shared_prefix")
    slow = constrained_beam_search(rec.model, ids, mask, rec.trie, 5, 5, decoder="cache")
    assert [[i for i, _ in r] for r in fast] == [[i for i, _ in r] for r in slow]
    assert np.allclose([s for r in fast for _, s in r], [s for r in slow for _, s in r], atol=1e-4)


def test_sid_llm_reads_a_request_on_its_own_line_before_the_code_history(
    tiny_codes, tiny_llama, word_level_tokenizer
):
    """NEO-style: the request between the instruction and the code history (a steered row)."""
    split, codes = tiny_codes
    params = {
        "backbone": {"name_or_path": str(tiny_llama)},
        "prompt": {"user": "items :\n{history}", "answer_prefix": ":"},
        "text_retention": {"enabled": False},
    }
    rec = build_model("sid_llm", params, seed=0, device="cpu", inputs={"codes": codes})
    rec.model, rec.tokenizer = rec.load()
    rec.prepare(split)
    rec.request_line = "{request}"
    history = [str(i) for i in split.items["item_id"][:3]]
    plain, steered = rec.prompt(history).ids, rec.prompt(history, "red sky").ids
    head = len(rec.prompt_head)
    request = rec.tokenizer("red sky\n", add_special_tokens=False).input_ids
    assert steered == plain[:head] + request + plain[head:]
    assert rec.tokenizer.convert_ids_to_tokens(steered[head : head + 2]) == ["red", "sky"]
    assert rec.user_prompt("u0", history, "").ids == plain
