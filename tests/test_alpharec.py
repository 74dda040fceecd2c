"""AlphaRec and its linear-mapping probe (llm4rec.paradigms.alpharec), the shared text encoder
artifact (llm4rec.llm.text_encoders) and the requests written from item metadata
(llm4rec.data.requests): each part against hand computation or a fixture whose answer is known."""

import dataclasses
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn.functional import normalize

from baselines.embedding_knn import EmbeddingKnn, EmbeddingKnnConfig
from llm4rec.data.requests import (
    RequestTemplate,
    decade,
    genre_list,
    matches,
    request_text,
    target_requests,
)
from llm4rec.data.sources import load_ml100k
from llm4rec.data.split import Split, leave_one_out_split
from llm4rec.evaluation.evaluate import evaluate_rankings
from llm4rec.io import write_json, write_npy
from llm4rec.llm.text_encoders import (
    EncoderConfig,
    build_text_embeddings,
    read_encoder,
    text_embeddings,
)
from llm4rec.models import MODELS, ResolvedInput, build_model, resolved_params
from llm4rec.paradigms.alpharec import (
    history_means,
    info_nce,
    normalized_adjacency,
    propagate,
    sample_negatives,
)

from .conftest import interactions_frame
from .helpers import labelled_split

# -- LightGCN propagation on a 3-user graph, by hand ---------------------------------------------
#   u0 - i0,  u1 - i0,  u1 - i1,  u2 - i1     degrees: u0 1, u1 2, u2 1, i0 2, i1 2
#   normalised weights: u0-i0 = u2-i1 = 1/sqrt(1*2);  u1-i0 = u1-i1 = 1/sqrt(2*2) = 1/2


def test_lightgcn_propagation_matches_a_hand_computed_three_user_graph():
    a = normalized_adjacency(3, 2, np.array([0, 1, 1, 2, 0]), np.array([0, 0, 1, 1, 0]))
    r = 1 / math.sqrt(2)
    # one scalar feature per node: users 1, 2, 3; items 4, 5
    u0, u1, u2, i0, i1 = 1.0, 2.0, 3.0, 4.0, 5.0
    # layer 1
    u0_1, u1_1, u2_1 = r * i0, 0.5 * i0 + 0.5 * i1, r * i1
    i0_1, i1_1 = r * u0 + 0.5 * u1, 0.5 * u1 + r * u2
    # layer 2
    u0_2, u1_2, u2_2 = r * i0_1, 0.5 * i0_1 + 0.5 * i1_1, r * i1_1
    i0_2, i1_2 = r * u0_1 + 0.5 * u1_1, 0.5 * u1_1 + r * u2_1
    expected = [
        (u0 + u0_1 + u0_2) / 3,
        (u1 + u1_1 + u1_2) / 3,
        (u2 + u2_1 + u2_2) / 3,
        (i0 + i0_1 + i0_2) / 3,
        (i1 + i1_1 + i1_2) / 3,
    ]
    x = torch.tensor([[u0], [u1], [u2], [i0], [i1]])
    torch.testing.assert_close(propagate(a, x, 2)[:, 0], torch.tensor(expected))
    torch.testing.assert_close(propagate(a, x, 0), x)  # K = 0: the input (the probe)


def test_an_isolated_node_keeps_only_its_own_share_of_the_layer_mean():
    a = normalized_adjacency(2, 2, np.array([0]), np.array([0]))  # user 1 and item 1 isolated
    x = torch.ones(4, 3)
    out = propagate(a, x, 2)
    torch.testing.assert_close(out[1], torch.full((3,), 1 / 3))  # x, 0, 0 -> x / 3


# -- InfoNCE ------------------------------------------------------------------------------------
def test_info_nce_matches_a_hand_computed_value():
    users = torch.tensor([[2.0, 0.0]])  # cosine ignores the length
    items = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    loss = info_nce(users, items, torch.tensor([0]), torch.tensor([[1, 2]]), tau=0.5)
    # cosines 1, 0, -1 -> logits 2, 0, -2 -> -log(e^2 / (e^2 + e^0 + e^-2))
    expected = -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-2)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_averages_over_pairs_and_counts_a_repeated_negative_twice():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = info_nce(users, items, torch.tensor([0, 1]), torch.tensor([[1, 1], [0, 0]]), tau=1.0)
    # each pair: cosines 1 (positive), 0, 0 -> -log(e / (e + 2))
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 2)), rel=1e-6)


def test_sampled_negatives_avoid_the_users_training_items():
    seen = torch.zeros(2, 6, dtype=torch.bool)
    seen[0, :5] = True  # user 0 has seen all but item 5
    pairs = torch.tensor([[0, 1], [1, 2]])
    negatives = sample_negatives(pairs, seen, 50, torch.Generator().manual_seed(0))
    assert negatives.shape == (2, 50)
    assert (negatives[0] == 5).all()
    assert set(negatives[1].tolist()) == set(range(6))  # user 1: uniform over the catalogue


# -- requests from item metadata ------------------------------------------------------------------
def test_requests_name_genres_and_decade_and_never_the_title():
    template = RequestTemplate()
    item = pd.Series(
        {"title": "Toy Story", "year": "1995", "genres": "Animation Children's Comedy"}
    )
    assert (
        request_text(item, template)
        == "something from the 1990s: animation or children's or comedy"
    )
    assert genre_list("Action|Adventure|action") == ["action", "adventure"]
    assert decade("1968") == "1960s" and decade("") == ""
    assert request_text(item.drop("year").reindex(item.index, fill_value=""), template) == ""


def test_no_request_on_movielens_contains_its_items_title():
    items = load_ml100k().items
    for template in ("{genres}", "{decade}", "I want {genres} from the {decade}"):
        texts = [request_text(item, RequestTemplate(template)) for _, item in items.iterrows()]
        assert sum(map(bool, texts)) >= 0.99 * len(items)  # '' only where an attribute is missing
        for title, text in zip(items["title"].astype(str), texts, strict=True):
            assert not re.search(rf"\b{re.escape(title.lower())}\b", text.lower()), (title, text)


def test_unknown_placeholders_are_named():
    with pytest.raises(ValueError, match=r"unknown: title"):
        RequestTemplate("a film like {title}")


def test_the_constraint_set_is_the_items_sharing_a_genre_in_the_same_decade():
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d", "e"],
            "title": ["A", "B", "C", "D", "E"],
            "year": ["1994", "1999", "1994", "1985", ""],
            "genres": ["Comedy Drama", "Drama", "Horror", "Comedy", "Comedy"],
        }
    )
    target = items.iloc[0]
    # by hand: same decade (1990s) and a shared genre (comedy or drama): a, b (c: horror; d: 1980s;
    # e: no year)
    assert matches(items, target, RequestTemplate()) == [True, True, False, False, False]
    assert matches(items, target, RequestTemplate("{genres}")) == [True, True, False, True, True]
    assert matches(items, target, RequestTemplate("the {decade}")) == [
        True,
        True,
        True,
        False,
        False,
    ]


# -- a fixture whose answer is known -------------------------------------------------------------
def clustered_split(
    n_clusters=4, per_cluster=10, users_per_cluster=8, seen=8, noise=0.05, seed=0
) -> tuple[Split, np.ndarray]:
    """Items come in clusters: the first dimensions of their text embeddings say the cluster, 8
    more are noise of scale `noise`; every user walks `seen` items of one cluster (the last two
    are its validation and test targets). Known answer: the items left to recommend from the
    user's own cluster are the right ones."""
    rng = np.random.default_rng(seed)
    n_items = n_clusters * per_cluster
    signal = np.repeat(np.eye(n_clusters), per_cluster, axis=0)
    z = np.concatenate([signal, rng.normal(0, noise, (n_items, 8))], axis=1)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    rows = []
    for c in range(n_clusters):
        for k in range(users_per_cluster):
            order = rng.permutation(per_cluster)[:seen] + c * per_cluster
            rows += [(f"u{c}_{k}", str(i), float(t)) for t, i in enumerate(order)]
    labelled = leave_one_out_split(interactions_frame(rows))
    split = labelled_split(labelled, [f"item {i}" for i in range(n_items)])
    return split, z.astype(np.float32)


def text_input(folder, z, encoder=None) -> dict[str, ResolvedInput]:
    write_npy(folder / "item_embeddings.npy", z)
    write_json(folder / "encoder.json", dataclasses.asdict(encoder or EncoderConfig()))
    files = {
        "item_embeddings.npy": folder / "item_embeddings.npy",
        "encoder.json": folder / "encoder.json",
    }
    return {"text": ResolvedInput(files, "fixture")}


def own_cluster_share(rankings: pd.DataFrame, per_cluster: int = 10) -> float:
    """Share of users whose top two items both come from the user's own cluster (u<c>_<k>)."""
    top2 = rankings[rankings["rank"] <= 2]
    same = top2["item_id"].astype(int) // per_cluster == top2["user_id"].str[1].astype(int)
    return float(same.groupby(top2["user_id"]).all().mean())


@pytest.mark.parametrize("model", ["alpharec_linear", "alpharec"])
def test_the_probe_and_alpharec_learn_which_text_dimensions_carry_the_behaviour(tmp_path, model):
    # the noise dimensions dominate the raw text similarity: the cosine of the text embeddings
    # misses the users' clusters; only a trained map that weighs the cluster dimensions finds them
    split, z = clustered_split(users_per_cluster=16, noise=0.7)
    history = split.history("test")
    users = sorted(split.targets("test"))
    raw = EmbeddingKnn(
        EmbeddingKnnConfig(), ResolvedInput({"item_embeddings.npy": tmp_path / "z.npy"}, "z")
    )
    write_npy(tmp_path / "z.npy", z)
    raw.fit(split, tmp_path)
    assert own_cluster_share(raw.rank({u: history[u] for u in users}, 10)) < 0.8
    params = {
        "epochs": 60,
        "negatives": 8,
        "batch_size": 16,
        "learning_rate": 0.01,
        "patience": 60,
        "mlp_hidden": 64,
    }
    recommender = build_model(model, params, 0, "cpu", inputs=text_input(tmp_path, z))
    info = recommender.fit(split, tmp_path / "work")
    d = z.shape[1]
    assert info["parameters_trainable"] == (
        d * 64 if model == "alpharec_linear" else d * 64 + 64 + 64 * 64 + 64
    )
    rankings = recommender.rank({u: history[u] for u in users}, 10)
    # the one evaluator checks it (catalogue items, no history item, every test user)
    _, summary = evaluate_rankings(rankings, split, "test", [1, 10], source="fixture")
    assert own_cluster_share(rankings) == 1.0
    assert summary["hr_at_10"] == 1.0


def test_zero_shot_transfer_ranks_only_the_target_catalogue_with_the_source_map(tmp_path):
    # source: 4 clusters of 10 items; target: another catalogue of 3 clusters whose items carry
    # the source's cluster dimensions 1-3 in their text embeddings (and fresh noise). Nothing is
    # trained on the target: the transferred map finds its users' clusters, an untrained map does
    # not, and every ranked item is a target item (the evaluator refuses any other).
    source, z_source = clustered_split(users_per_cluster=16, noise=0.7)
    target, z = clustered_split(n_clusters=3, users_per_cluster=12, noise=0.85, seed=1)
    z_target = np.concatenate([np.zeros((len(z), 1), np.float32), z], axis=1)
    params = {"epochs": 60, "negatives": 8, "batch_size": 16, "learning_rate": 0.01}
    params |= {"patience": 60, "mlp_hidden": 64}
    (tmp_path / "source").mkdir()
    trained = build_model("alpharec", params, 0, "cpu", inputs=text_input(tmp_path, z_source))
    trained.fit(source, tmp_path / "work")
    trained.export(tmp_path / "source", source)
    files = {name: tmp_path / "source" / name for name in ("alpharec.pt", "alpharec.json")}
    transfer = ResolvedInput(files, "run alpharec/seed0 on source")
    (tmp_path / "target").mkdir()
    inputs = text_input(tmp_path / "target", z_target) | {"source": transfer}
    history = target.history("test")
    users = sorted(target.targets("test"))
    shares = {}
    for name in ("alpharec_zeroshot", "alpharec_linear_untrained"):
        slots = {slot: inputs[slot] for slot in MODELS[name].inputs}
        model = build_model(name, params, 0, "cpu", inputs=slots)
        info = model.fit(target, tmp_path / "work")
        assert info["epochs"] == 0 and info["valid_curve"] == []
        assert ("transferred_from" in info) == (name == "alpharec_zeroshot")
        rankings = model.rank({u: history[u] for u in users}, 10)
        evaluate_rankings(rankings, target, "test", [1, 10], source=name)
        assert set(rankings["item_id"]) <= set(target.items["item_id"])
        shares[name] = own_cluster_share(rankings)
    assert resolved_params("alpharec_zeroshot", params)["epochs"] == 0
    assert shares["alpharec_zeroshot"] >= 0.85 and shares["alpharec_linear_untrained"] < 0.65
    # another encoder on the target side: items cannot be matched, and the error says why
    other = text_input(tmp_path / "target", z_target, EncoderConfig(model="another-encoder"))
    with pytest.raises(ValueError, match="both sides need one encoder"):
        build_model("alpharec_zeroshot", params, 0, "cpu", inputs=other | {"source": transfer}).fit(
            target, tmp_path / "work"
        )


def test_the_linear_probe_is_alpharec_without_mlp_or_graph():
    probe = resolved_params("alpharec_linear", {})
    assert probe["mapping"] == "linear" and probe["graph_layers"] == 0
    full = resolved_params("alpharec", {})
    assert full["mapping"] == "mlp" and full["graph_layers"] == 2
    smollm2 = MODELS["alpharec_linear_llm"].inputs["text"].default
    assert smollm2["params"]["kind"] == "backbone"


# -- intentions ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minilm_folder(tmp_path_factory):
    """The shipped all-MiniLM-L6-v2 over a 40-item catalogue with genres and years."""
    folder = tmp_path_factory.mktemp("minilm")
    split, _ = clustered_split()
    genres = ["Comedy", "Horror", "Western", "Documentary"]
    items = split.items.assign(
        genres=[genres[int(i) // 10] for i in split.items["item_id"]],
        year=["1995" if int(i) % 2 else "1972" for i in split.items["item_id"]],
    )
    split = Split(split.interactions, items, split.meta)
    encoder = EncoderConfig(cache_dir=str(folder / "cache"))
    facts = build_text_embeddings(split, encoder, None, folder)
    assert facts["items"] == 40 and read_encoder(folder / "encoder.json") == encoder
    return split, folder


def intent_model(folder, split, alpha, chosen=False):
    """alpharec (alpha None) or alpharec_intent with the weight `alpha`, or chosen on validation
    (`chosen`)."""
    files = {n: folder / n for n in ("item_embeddings.npy", "encoder.json")}
    params = {
        "epochs": 5,
        "negatives": 8,
        "batch_size": 16,
        "learning_rate": 0.01,
        "mlp_hidden": 64,
    }
    if alpha is not None or chosen:
        params["intention"] = {"alpha": alpha}
    model = "alpharec" if params.get("intention") is None else "alpharec_intent"
    recommender = build_model(model, params, 0, "cpu", inputs={"text": ResolvedInput(files, "x")})
    info = recommender.fit(split, folder / "work")
    return recommender, info


def test_the_intention_is_blended_into_one_users_input_before_the_graph(minilm_folder):
    """alpha 0 ranks as the plain model; at 0.6 each user's list equals a brute-force forward in
    which that user's language input alone is blended with its request (every other user's input
    unchanged) and the whole graph propagated again: the exact per-user update, no leak of one
    user's request into another's list."""
    split, folder = minilm_folder
    plain, _ = intent_model(folder, split, None)
    assert plain.request_template is None  # the runner passes it no requests
    users = sorted(split.targets("test"))
    history = split.history("test")
    histories = {u: history[u] for u in users}
    requests = target_requests(split, "test", users, RequestTemplate())
    assert all(requests.values()) and len(set(requests.values())) > 1
    # alpha 0: trained the same (same seed, the intention does not touch training), blended at 0
    at_zero, _ = intent_model(folder, split, 0.0)
    pd.testing.assert_frame_equal(
        at_zero.rank(histories, 5, requests=requests), plain.rank(histories, 5)
    )
    model, info = intent_model(folder, split, 0.6)
    assert model.request_template == RequestTemplate()
    assert info["chosen"] == {"intention_alpha": 0.6}  # configured: the grid is that one value
    ranked = model.rank(histories, 5, requests=requests)
    encoder = read_encoder(folder / "encoder.json")
    with torch.no_grad():
        request_z = torch.tensor(text_embeddings([requests[u] for u in users], encoder))
        inputs = [list(h) for h in model.train_histories]
        for user in users:
            inputs[model.user_row[user]] = [model.row[i] for i in histories[user]]
        base = history_means(model.z, inputs)
        for row, user in enumerate(users):
            blended = base.clone()
            g = model.user_row[user]
            blended[g] = 0.4 * base[g] + 0.6 * request_z[row]
            graph_users, items = model.model(blended, model.z, model.adjacency)
            scores = normalize(graph_users[g], dim=0) @ normalize(items, dim=1).T
            scores[[model.row[i] for i in history[user]]] = -torch.inf
            top = torch.topk(scores, 5)
            got = ranked[ranked["user_id"] == user]
            assert got["item_id"].tolist() == [model.items[i] for i in top.indices.tolist()]
            np.testing.assert_allclose(got["score"], top.values.numpy(), rtol=1e-5, atol=1e-6)


def test_the_intention_weight_is_chosen_on_validation(minilm_folder):
    """Without a configured weight, fit scores every weight of 0, 0.1, ..., 1 on the validation
    users with their validation targets' requests and keeps the best (the first of ties)."""
    from llm4rec.evaluation.evaluate import selection_score

    split, folder = minilm_folder
    model, info = intent_model(folder, split, None, chosen=True)
    curve = info["intention_alpha_curve"]
    assert [point["alpha"] for point in curve] == [round(0.1 * i, 1) for i in range(11)]
    users = sorted(split.targets("valid"))
    history = split.history("valid")
    requests = target_requests(split, "valid", users, RequestTemplate())
    for point in curve[::5]:
        ranking = model.rank(
            {u: history[u] for u in users}, 10, requests=requests, alpha=point["alpha"]
        )
        assert point["ndcg_at_10"] == pytest.approx(selection_score(ranking, split, "ndcg_at_10"))
    best = max(curve, key=lambda point: point["ndcg_at_10"])["alpha"]
    assert info["chosen"] == {"intention_alpha": best} and model.intention_alpha == best
    assert info["notes"] == [f"intention weight {best:g} chosen on validation"]
