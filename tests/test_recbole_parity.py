"""Our evaluator against RecBole's own, on RecBole models' rankings (ml-100k, full ranking).

RecBole masks the same history (train items for validation; train + validation for test)
in its general-model full-sort evaluation, so the numbers must agree to 1e-6.
"""

import pytest
import torch

from baselines.recbole_models import DATASET_NAME, recbole_sandbox
from llm4rec.data.preprocess import preprocess
from llm4rec.data.sources import load_ml100k
from llm4rec.data.split import leave_one_out_split, write_split
from llm4rec.evaluation.evaluate import evaluate_rankings
from llm4rec.models import build_model

CUTOFFS = [5, 10, 20, 50]
RECBOLE_NAMES = {"hr": "hit", "recall": "recall", "ndcg": "ndcg", "mrr": "mrr"}


@pytest.fixture(scope="module")
def ml100k_split(tmp_path_factory):
    raw = load_ml100k()
    kept, _ = preprocess(
        raw.interactions,
        rating_threshold=None,
        dedup="first",
        min_user=5,
        min_item=5,
        dataset="ml-100k",
    )
    return write_split(
        tmp_path_factory.mktemp("split"),
        leave_one_out_split(kept),
        raw.items,
        {"dataset": "ml-100k"},
    )


def recbole_loaders(rec, workdir):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    config_dict = rec.recbole_config(workdir.resolve() / "recbole_data") | {
        "metrics": ["Hit", "Recall", "NDCG", "MRR"],
        "topk": CUTOFFS,
    }
    with recbole_sandbox(workdir / "recbole_check"):
        config = Config(model=rec.config["model"], dataset=DATASET_NAME, config_dict=config_dict)
        dataset = create_dataset(config)
        _, valid_data, test_data = data_preparation(config, dataset)
    return config, {"valid": valid_data, "test": test_data}


@pytest.mark.parametrize("model", ["bpr", "lightgcn"])
def test_evaluator_matches_recbole_evaluator(model, ml100k_split, tmp_path):
    from recbole.utils import get_trainer

    torch.set_num_threads(2)
    rec = build_model(
        model,
        {"epochs": 2, "learning_rate": 0.01, "show_progress": False, "train_batch_size": 4096},
        0,
        "cpu",
    )
    rec.fit(ml100k_split, tmp_path / "work")
    config, loaders = recbole_loaders(rec, tmp_path / "work")
    for phase in ("valid", "test"):
        with recbole_sandbox(tmp_path / "work" / "recbole_check"):
            trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, rec.model)
            theirs = trainer.evaluate(loaders[phase], load_best_model=False, show_progress=False)
        history = ml100k_split.history(phase)
        rankings = rec.rank({u: history[u] for u in ml100k_split.targets(phase)}, max(CUTOFFS))
        _, ours = evaluate_rankings(rankings, ml100k_split, phase, CUTOFFS)
        assert ours["ndcg_at_10"] > 0.01  # a trained model, not a degenerate one
        for ours_name, theirs_name in RECBOLE_NAMES.items():
            for k in CUTOFFS:
                assert ours[f"{ours_name}_at_{k}"] == pytest.approx(
                    theirs[f"{theirs_name}@{k}"], abs=1e-6
                ), (phase, ours_name, k)


def test_sasrec_inputs_match_recbole_loader(ml100k_split, tmp_path):
    """The history sequences we feed SASRec at ranking time equal RecBole's own test batches."""
    rec = build_model(
        "sasrec_recbole",
        {"epochs": 0, "MAX_ITEM_LIST_LENGTH": 10, "show_progress": False},
        0,
        "cpu",
    )
    rec.fit(ml100k_split, tmp_path / "work")
    _, loaders = recbole_loaders(rec, tmp_path / "work")
    ds = rec.dataset
    history = ml100k_split.history("test")
    checked = 0
    with torch.no_grad():
        for interaction, _, _, _ in loaders["test"]:
            users = ds.id2token(ds.uid_field, interaction[ds.uid_field].numpy()).tolist()
            ours = rec._interaction(users, history)
            assert torch.equal(ours[rec.model.ITEM_SEQ], interaction[rec.model.ITEM_SEQ])
            assert torch.equal(ours[rec.model.ITEM_SEQ_LEN], interaction[rec.model.ITEM_SEQ_LEN])
            torch.testing.assert_close(
                rec.model.full_sort_predict(ours), rec.model.full_sort_predict(interaction)
            )
            checked += len(users)
    assert checked == 943


def test_mostpop_ranks_by_exact_training_popularity_for_every_seed(ml100k_split, tmp_path):
    popularity = ml100k_split.item_popularity()
    history = ml100k_split.history("test")
    user = sorted(history)[0]
    expected = popularity.drop(labels=list(history[user])).sort_values(
        ascending=False, kind="stable"
    )
    ranked = []
    for seed in (0, 1):
        rec = build_model("mostpop", {"show_progress": False}, seed, "cpu")
        rec.fit(ml100k_split, tmp_path / f"work{seed}")
        top = rec.rank({user: history[user]}, 20)
        assert top["score"].is_monotonic_decreasing
        # scores are exact counts / max count; the ranked items' counts are the top-20 counts
        assert popularity.loc[top["item_id"]].tolist() == expected.iloc[:20].tolist()
        assert top["score"].tolist() == pytest.approx(
            (expected.iloc[:20] / popularity.max()).tolist()
        )
        ranked.append(top["item_id"].tolist())
    assert ranked[0] == ranked[1]


def test_baseline_selects_on_the_configured_validation_metric(ml100k_split, tmp_path):
    """Early stopping / best epoch use the grid's selection metric (here HR@5): the reported best
    score is the curve's maximum, and it is the one evaluator's HR@5 of the restored best model."""
    torch.set_num_threads(2)
    rec = build_model(
        "bpr",
        {"epochs": 3, "learning_rate": 0.01, "show_progress": False, "train_batch_size": 4096},
        0,
        "cpu",
        selection="hr_at_5",
    )
    info = rec.fit(ml100k_split, tmp_path / "work")
    curve = [point["hr_at_5"] for point in info["valid_curve"]]
    assert (
        info["selection_metric"] == "hr_at_5"
        and len(curve) == 3
        and "best_valid_ndcg_at_10" not in info
    )
    assert info["best_valid_hr_at_5"] == max(curve)
    history = ml100k_split.history("valid")
    rankings = rec.rank({u: history[u] for u in ml100k_split.targets("valid")}, 5)
    _, summary = evaluate_rankings(rankings, ml100k_split, "valid", [5])
    assert summary["hr_at_5"] == pytest.approx(info["best_valid_hr_at_5"], abs=1e-12)


def test_the_native_sasrec_scores_as_recboles_sasrec_with_the_same_weights(ml100k_split, tmp_path):
    """baselines/sasrec.py's network is RecBole's: RecBole's SASRec (one epoch of its training),
    its weights copied into the native model (item rows reordered from RecBole's ids to the
    catalogue's), gives the same full-catalogue scores for every test user, to float tolerance."""
    from baselines.sasrec import NativeSASRec, SasrecConfig

    torch.set_num_threads(2)
    shape = {"hidden_size": 32, "inner_size": 64, "n_layers": 2, "n_heads": 2}
    recbole = build_model(
        "sasrec_recbole",
        {"epochs": 1, "MAX_ITEM_LIST_LENGTH": 20, "show_progress": False, "train_batch_size": 4096}
        | shape,
        0,
        "cpu",
    )
    recbole.fit(ml100k_split, tmp_path / "work")
    native = NativeSASRec(
        SasrecConfig(max_len=20, epochs=0, hidden_dropout=0.5, attn_dropout=0.5, **shape),
        0,
        "cpu",
        "ndcg_at_10",
    )
    native.fit(ml100k_split, tmp_path / "native")
    theirs = recbole.model.state_dict()
    ds = recbole.dataset
    rows = torch.as_tensor(ds.token2id(ds.iid_field, native.items))
    state = dict(theirs)
    state["item_embedding.weight"] = torch.cat(
        [theirs["item_embedding.weight"][:1], theirs["item_embedding.weight"][rows]]
    )
    assert set(state) == set(native.net.state_dict())  # the same parameters, named alike
    native.net.load_state_dict(state)
    history = ml100k_split.history("test")
    users = sorted(ml100k_split.targets("test"))
    ours = native.scores([history[u] for u in users])[:, 1:]
    recbole.catalogue = native.items
    reference = recbole.catalogue_scores(users, history)
    torch.testing.assert_close(ours, torch.as_tensor(reference), rtol=1e-5, atol=1e-5)
    a = native.rank({u: history[u] for u in users[:50]}, 10)
    b = recbole.rank({u: history[u] for u in users[:50]}, 10)
    assert (a["item_id"].to_numpy() == b["item_id"].to_numpy()).mean() > 0.99
