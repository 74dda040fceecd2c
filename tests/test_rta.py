"""Reindex-Then-Adapt (llm4rec.paradigms.rta): the frozen LLM's queries against a direct forward,
the aggregator's one token per item, the reindex loss by hand, the bias term on a fixture whose
answer is known, RecSys gating at its ends, and every ranking through the one evaluator."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from llm4rec.data.split import leave_one_out_split
from llm4rec.evaluation.evaluate import evaluate_rankings, rankings_to_lists
from llm4rec.io import write_json, write_npy, write_parquet, write_text
from llm4rec.llm.backbone import BackboneConfig
from llm4rec.llm.prompts import PromptTemplate
from llm4rec.models import MODELS, ResolvedInput, build_model, resolved_params
from llm4rec.paradigms.rta import (
    Aggregator,
    StatesConfig,
    build_llm_states,
    gated_scores,
    query_positions,
    reindex_loss,
)

from .conftest import interactions_frame
from .helpers import labelled_split, tiny_backbone

WORDS = ["Alpha", "Beta", "Gamma", "Delta", "Epsilon", "Zeta", "(1995)", "watched:", "A", "user"]
TITLES = ["Alpha Beta", "Gamma", "Delta Epsilon Zeta", "Beta Gamma", "Zeta", "Alpha"]
# the frozen LLM's prompt: a header, each title ended by a space (the separator)
WORDING = PromptTemplate(user="A user watched:{history}", system=None, line="{title} ")


def _toy_split(users: int = 8, length: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u}", str(i), float(t))
        for u in range(users)
        for t, i in enumerate(rng.permutation(len(TITLES))[:length] % len(TITLES))
    ]
    return labelled_split(leave_one_out_split(interactions_frame(rows)), TITLES)


# -- the reindex loss and the aggregator, by hand -------------------------------------------------
def test_reindex_loss_matches_hand_computation_in_batch_and_over_the_catalogue():
    q = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    items = torch.tensor([[1.0, 1.0], [0.0, 1.0], [2.0, 0.0], [-1.0, 0.0]])
    targets = torch.tensor([2, 0, 2])

    # in batch: candidates are the distinct targets {0, 2}; logits q . e_0, q . e_2
    #   q0: (1, 2) target 2;  q1: (2, 0) target 0;  q2: (2, 2) target 2
    def ce(logits, label):
        return math.log(sum(math.exp(v) for v in logits)) - logits[label]

    in_batch = (ce([1, 2], 1) + ce([2, 0], 0) + ce([2, 2], 1)) / 3
    catalogue = (ce([1, 0, 2, -1], 2) + ce([2, 2, 0, 0], 0) + ce([2, 1, 2, -1], 2)) / 3
    assert reindex_loss(q, items, targets, "in_batch").item() == pytest.approx(in_batch)
    assert reindex_loss(q, items, targets, "catalogue").item() == pytest.approx(catalogue)


def test_the_aggregator_gives_each_item_one_token_starting_as_its_title_mean():
    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    titles = torch.tensor([[0, 1, -1], [2, -1, -1], [0, 1, 2]])
    for kind in ("weighted", "transformer"):
        out = Aggregator(rows, titles, kind, heads=1)()
        assert out.shape == (3, 2)  # one token (row) per item, whatever its title's length
    weighted = Aggregator(rows, titles, "weighted", heads=1)()
    torch.testing.assert_close(weighted, torch.tensor([[0.5, 1.0], [3.0, 3.0], [4 / 3, 5 / 3]]))


def test_gating_in_log_space_by_hand():
    llm, recsys = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([[math.log(4.0), 0.0]])
    # log softmax: llm (log 1/4, log 3/4), recsys (log 4/5, log 1/5); a = 0.5
    expected = 0.5 * torch.tensor([[math.log(1 / 4), math.log(3 / 4)]]) + 0.5 * torch.tensor(
        [[math.log(4 / 5), math.log(1 / 5)]]
    )
    torch.testing.assert_close(gated_scores(llm, recsys, 0.5), expected)


# -- the frozen LLM's queries ----------------------------------------------------------------------
def test_query_positions_cover_the_last_window_items():
    assert query_positions([3, 6], 4) == [[0, 1, 2], [2, 3, 4, 5]]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    model, tokenizer = tiny_backbone(WORDS + ["\n"], seed=0, hidden=16, layers=2, init_std=0.2)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model, tokenizer


def test_each_query_is_the_hidden_state_of_a_direct_forward_over_that_prefix(tiny_folder, tmp_path):
    folder, model, tokenizer = tiny_folder
    split = _toy_split()
    cfg = StatesConfig(
        backbone=BackboneConfig(name_or_path=str(folder)), prompt=WORDING,
        window=4, batch_size=3,
    )  # fmt: skip
    build_llm_states(split, cfg, None, tmp_path)
    frame = pd.read_parquet(tmp_path / "states.parquet")
    states = np.load(tmp_path / "states.npy")
    sequences = split.history("test")
    assert len(frame) == len(states) == sum(min(4, len(s)) for s in sequences.values())
    for row, (user, position, context) in enumerate(frame.itertuples(index=False)):
        assert position >= len(sequences[user]) - 4 and context <= 4
        first = position - context + 1  # the window's first item
        text = "A user watched: " + " ".join(
            TITLES[int(i)] + " " for i in sequences[user][first : position + 1]
        )
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        # the word-level tokenizer drops the separator (whitespace): the query is the title's end
        with torch.no_grad():
            direct = model.base_model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        np.testing.assert_allclose(states[row], direct.numpy(), rtol=1e-4, atol=1e-5)
    # each user's validation query (after its last training item) and test query (after the last)
    for user, sequence in sequences.items():
        positions = set(frame.position[frame.user_id == user])
        assert {len(sequence) - 2, len(sequence) - 1} <= positions


# -- the recommender on hand-made queries ---------------------------------------------------------
def _states_input(folder, split, q_of, rows: np.ndarray, titles: np.ndarray) -> ResolvedInput:
    """An llm_states input whose query for (user, position) is q_of(user, position)."""
    sequences = split.history("test")
    frame = pd.DataFrame(
        [(u, p, p + 1) for u in sorted(sequences) for p in range(len(sequences[u]))],
        columns=["user_id", "position", "context"],
    )
    q = [q_of(u, p) for u, p, _ in frame.itertuples(index=False)]
    write_npy(folder / "states.npy", np.stack(q).astype(np.float32))
    write_parquet(folder / "states.parquet", frame)
    write_npy(folder / "title_tokens.npy", titles)
    write_npy(folder / "token_rows.npy", rows.astype(np.float32))
    write_json(folder / "states.json", {"backbone": {"name_or_path": "hand-made queries"}})
    names = ("states.npy", "states.parquet", "title_tokens.npy", "token_rows.npy", "states.json")
    return ResolvedInput({n: folder / n for n in names}, "artifact llm_states/test")


def _one_hot_items(n: int):
    """Item i's title is the single token i, whose embedding is the unit vector e_i."""
    return np.eye(n), np.arange(n)[:, None]


def _popular_split(n_items: int = 12, users: int = 60, seed: int = 0):
    """Each user's 6 distinct items drawn with weights falling from 3 (item 0) to 1, item 11 a
    tenth of that: the platform's popularity, with the last item its rarest."""
    rng = np.random.default_rng(seed)
    weights = np.array([1.0] * (n_items - 1) + [0.1]) * np.linspace(3, 1, n_items)
    rows = []
    for u in range(users):
        items = rng.choice(n_items, size=6, replace=False, p=weights / weights.sum())
        rows += [(f"u{u}", str(i), float(t)) for t, i in enumerate(items)]
    titles = [f"t{i}" for i in range(n_items)]
    return labelled_split(leave_one_out_split(interactions_frame(rows)), titles)


def test_a_bias_term_learns_the_platform_distribution_the_frozen_llm_misses(tmp_path):
    split = _popular_split()
    rows, titles = _one_hot_items(12)
    rng = np.random.default_rng(1)
    # the LLM favours item 11 for everyone (its own prior) and knows nothing of the platform
    states = _states_input(
        tmp_path, split, lambda u, p: np.eye(12)[11] * 3 + rng.normal(0, 0.1, 12), rows, titles
    )
    params = {"epochs": 0, "adapt": {"epochs": 60, "patience": 60, "learning_rate": 0.1}}
    history = split.history("test")
    first = {}
    for name in ("rta_reindex", "rta_bias"):
        model = build_model(name, params, 0, "cpu", inputs={"states": states})
        info = model.fit(split, tmp_path)
        rankings = model.rank({u: history[u] for u in split.targets("test")}, 12)
        evaluate_rankings(rankings, split, "test", [1, 10])  # the one evaluator
        first[name] = {u: items[0] for u, items in rankings_to_lists(rankings).items()}
    assert resolved_params("rta_bias", {})["adapt"]["kind"] == "bias"

    # what this platform's users take next: each training query's target (not the first item)
    targets = np.bincount(
        [int(i) for h in split.history("valid").values() for i in h[1:]], minlength=12
    )
    effective = (model.bias + torch.as_tensor(model.q).mean(0)).detach().numpy()  # g + b, mean q
    rho = np.corrcoef(np.argsort(np.argsort(effective)), np.argsort(np.argsort(targets)))[0, 1]
    unseen = [u for u in first["rta_reindex"] if "11" not in history[u]]
    llm_first = [first["rta_reindex"][u] == "11" for u in unseen]
    assert np.mean(llm_first) == 1.0  # the frozen LLM's own prior: item 11 for everyone
    assert "11" not in first["rta_bias"].values() and targets[11] == targets.min()
    assert rho > 0.8  # the adapted distribution follows the platform's next-item frequencies
    assert info["adapt_best_epoch"] > 0
    assert info["adapt_best_valid"] > info["adapt_valid_curve"][0]["ndcg_at_10"]  # epoch 0: reindex
    assert info["best_valid_ndcg_at_10"] == info["adapt_best_valid"]


def test_gating_at_one_is_the_reindexed_llm_and_at_zero_the_consumed_baseline(tmp_path):
    split = _toy_split(users=10)
    rows, titles = _one_hot_items(len(TITLES))
    rng = np.random.default_rng(2)
    q = {}
    states = _states_input(
        tmp_path, split, lambda u, p: q.setdefault((u, p), rng.normal(0, 1, 6)), rows, titles
    )
    recsys_dir = tmp_path / "sasrec"
    recsys_dir.mkdir()
    baseline = {}
    for phase in ("valid", "test"):
        users = sorted(split.targets(phase))
        scores = rng.normal(0, 1, (len(users), len(TITLES))).astype(np.float32)
        write_npy(recsys_dir / f"scores_{phase}.npy", scores)
        write_text(recsys_dir / f"users_{phase}.txt", "\n".join(users) + "\n")
        baseline[phase] = dict(zip(users, scores, strict=True))
    names = ("scores_valid.npy", "users_valid.txt", "scores_test.npy", "users_test.txt")
    recsys = ResolvedInput({n: recsys_dir / n for n in names}, "run sasrec/seed0")
    history = split.history("test")
    test_histories = {u: history[u] for u in split.targets("test")}

    def ranking(name, params):
        model = build_model(name, params, 0, "cpu", inputs={"states": states, "recsys": recsys})
        model.info = model.fit(split, tmp_path)
        rankings = model.rank(test_histories, len(TITLES))
        evaluate_rankings(rankings, split, "test", [1, 5])  # passes the evaluator
        return rankings_to_lists(rankings), model

    llm, _ = ranking("rta_reindex", {"epochs": 0})
    at_one, one = ranking("rta_recsys", {"epochs": 0, "adapt": {"alpha": 1.0}})
    at_zero, zero = ranking("rta_recsys", {"epochs": 0, "adapt": {"alpha": 0.0}})
    assert at_one == llm
    # at 0 the gate is the consumed run, item for item: the row is SASRec, and says so
    for user, items in at_zero.items():
        scores = baseline["test"][user]
        allowed = [i for i in np.argsort(-scores, kind="stable") if str(i) not in history[user]]
        assert items == [str(i) for i in allowed]
    assert zero.info["notes"] == [
        "gate chose SASRec only (α = 0, configured): the row is that run's ranking"
    ]
    assert one.info["notes"][0].startswith("gate chose the LLM only (α = 1")
    chosen, model = ranking("rta_recsys", {"epochs": 0})
    assert model.alpha in [round(0.1 * i, 1) for i in range(11)]
    assert model.info["chosen"] == {"gating_alpha": model.alpha}
    if 0 < model.alpha < 1:
        assert model.info["notes"] == [
            f"α = {model.alpha:g} (chosen on validation; the LLM's weight)"
        ]


def test_gating_finds_a_user_without_a_validation_target_in_the_test_scores(tmp_path):
    """A user whose validation item left (held out as new) has the same history before validation
    and before test, and the consumed run scored it only in test: at alpha 0 its ranking is that
    run's test scores, not an error about a phase it has no scores in."""
    rng = np.random.default_rng(3)
    rows = [
        (f"u{u}", str(i), float(t))
        for u in range(10)
        for t, i in enumerate(rng.permutation(len(TITLES))[:7])
    ]
    frame = leave_one_out_split(interactions_frame(rows))
    frame = frame[~((frame["user_id"] == "u0") & (frame["phase"] == "valid"))]
    split = labelled_split(frame, TITLES)
    assert "u0" not in split.targets("valid")
    assert len(split.history("valid")["u0"]) == len(split.history("test")["u0"])
    items, titles = _one_hot_items(len(TITLES))
    states = _states_input(tmp_path, split, lambda u, p: rng.normal(0, 1, 6), items, titles)
    recsys_dir = tmp_path / "sasrec"
    recsys_dir.mkdir()
    test_scores = {}
    for phase in ("valid", "test"):
        users = sorted(split.targets(phase))
        scores = rng.normal(0, 1, (len(users), len(TITLES))).astype(np.float32)
        write_npy(recsys_dir / f"scores_{phase}.npy", scores)
        write_text(recsys_dir / f"users_{phase}.txt", "\n".join(users) + "\n")
        if phase == "test":
            test_scores = dict(zip(users, scores, strict=True))
    names = ("scores_valid.npy", "users_valid.txt", "scores_test.npy", "users_test.txt")
    recsys = ResolvedInput({n: recsys_dir / n for n in names}, "run sasrec/seed0")
    params = {"epochs": 0, "adapt": {"alpha": 0.0}}
    model = build_model("rta_recsys", params, 0, "cpu", inputs={"states": states, "recsys": recsys})
    model.fit(split, tmp_path)
    history = split.history("test")["u0"]
    ranked = rankings_to_lists(model.rank({"u0": history}, len(TITLES)))["u0"]
    order = np.argsort(-test_scores["u0"], kind="stable")
    assert ranked == [str(i) for i in order if str(i) not in history]


def test_rta_rows_are_registered_as_parent_and_variants():
    assert MODELS["rta_bias"].parent == MODELS["rta_recsys"].parent == "rta_reindex"
    assert set(MODELS["rta_recsys"].inputs) == {"states", "recsys"}
    assert MODELS["rta_recsys"].inputs["recsys"].default == {"run": "sasrec"}


def test_the_reindex_curves_reach_mlflow(tmp_path):
    from llm4rec.tracking import training_curves

    split = _toy_split(users=10)
    rows, titles = _one_hot_items(len(TITLES))
    rng = np.random.default_rng(3)
    states = _states_input(tmp_path, split, lambda u, p: rng.normal(0, 1, 6), rows, titles)
    model = build_model("rta_reindex", {"epochs": 2}, 0, "cpu", inputs={"states": states})
    info = model.fit(split, tmp_path)
    curves = training_curves({"fit": info})
    losses = [v for k, v, _ in curves if k == "curve.train_loss"]
    valid = [(step, v) for k, v, step in curves if k == "curve.valid_ndcg_at_10"]
    assert losses == info["epoch_losses"] and len(losses) == 2
    assert [step for step, _ in valid] == [0, 1, 2]  # epoch 0: the mean-pooled titles


def test_the_steered_row_trains_as_its_parent_and_reads_the_request_after_the_titles(
    tiny_folder, tmp_path
):
    """rta_reindex_steer: the parent's aggregator bit for bit; its prompt without a request gives
    the artifact's query (the prompt rebuilt exactly); the request after the last title moves the
    query, and a user without one keeps the artifact's."""
    folder, _, tokenizer = tiny_folder
    split = _toy_split()
    split.items["genres"] = ["Alpha", "Beta", "Gamma", "Alpha", "Beta", "Gamma"]
    cfg = StatesConfig(
        backbone=BackboneConfig(name_or_path=str(folder)), prompt=WORDING,
        window=4, batch_size=3,
    )  # fmt: skip
    build_llm_states(split, cfg, None, tmp_path / "states")
    names = ("states.npy", "states.parquet", "title_tokens.npy", "token_rows.npy", "states.json")
    states = ResolvedInput({n: tmp_path / "states" / n for n in names}, "artifact llm_states/t")
    params = {"epochs": 3}
    parent = build_model("rta_reindex", params, 0, "cpu", inputs={"states": states})
    parent.fit(split, tmp_path / "p")
    steer = {"request": {"template": "{genres}"}, "line": "user {request}"}
    row = build_model("rta_reindex_steer", params | steer, 0, "cpu", inputs={"states": states})
    info = row.fit(split, tmp_path / "s")
    assert info["trained_with_requests"] is False
    for (name, a), (_, b) in zip(
        parent.aggregator.state_dict().items(), row.aggregator.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    histories = split.history("test")
    users = sorted(histories)
    pd.testing.assert_frame_equal(row.rank(histories, 3, requests={}), parent.rank(histories, 3))
    rebuilt = row.request_queries(users, histories, {})  # no request: the artifact's prompt
    torch.testing.assert_close(rebuilt, row.queries(users, histories), rtol=1e-4, atol=1e-5)
    ids = row.prompt_ids(users[0], histories[users[0]], "Beta")
    plain = row.prompt_ids(users[0], histories[users[0]], "")
    assert ids[: len(plain)] == plain
    assert tokenizer.convert_ids_to_tokens(ids[len(plain) :]) == ["user", "Beta"]  # " ": dropped
    asked = {users[0]: "Beta", users[1]: ""}
    q = row.queries(users, histories, asked)
    base = row.queries(users, histories)
    assert not torch.allclose(q[0], base[0]) and torch.equal(q[1:], base[1:])
    with pytest.raises(ValueError, match="reads no request"):
        parent.rank(histories, 3, requests={users[0]: "Beta"})
    # its LLM runs on the row's device, not on the one the artifact's job named (a GPU node's)
    gpu_node = dataclasses.replace(row.prompt_config.backbone, device="cuda:0")
    row.backbone, row.prompt_config = (
        None,
        dataclasses.replace(row.prompt_config, backbone=gpu_node),
    )
    torch.testing.assert_close(row.queries(users, histories, asked), q)
    assert next(row.backbone[0].parameters()).device == torch.device("cpu")
