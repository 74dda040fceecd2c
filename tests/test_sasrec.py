"""The native SASRec (baselines/sasrec.py): its losses over every position of a hand-built 2-user
batch against a hand computation (binary cross-entropy with the sampled negatives, full softmax
cross-entropy), padding masked; negatives outside the user's sequence; the paper's block (`block:
paper`) against its equations written out; and a short training run through the one evaluator.
Its scores against RecBole's SASRec: tests/test_recbole_parity.py."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.sasrec import (
    NativeSASRec,
    PaperSASRecNet,
    SasrecConfig,
    SASRecNet,
    position_loss,
    sequence_batch,
)
from llm4rec.data.split import leave_one_out_split
from llm4rec.evaluation.evaluate import evaluate_rankings

from .conftest import interactions_frame
from .helpers import labelled_split

SMALL = SasrecConfig(max_len=4, hidden_size=8, inner_size=16, n_layers=1, n_heads=1)


def _hand_loss(net, inputs, targets, negatives, loss):
    """The mean over every non-padding position, computed one position at a time."""
    with torch.no_grad():
        hidden = net(inputs).numpy()
        items = net.item_embedding.weight.numpy()
    terms = []
    for b in range(inputs.shape[0]):
        for t in range(inputs.shape[1]):
            target = int(targets[b, t])
            if target == 0:
                continue  # padding: no loss
            h = hidden[b, t]
            if loss == "bce":
                pos, neg = h @ items[target], h @ items[int(negatives[b, t])]
                terms.append(
                    -math.log(1 / (1 + math.exp(-pos))) - math.log(1 - 1 / (1 + math.exp(-neg)))
                )
            else:
                logits = items[1:] @ h
                terms.append(math.log(np.exp(logits).sum()) - logits[target - 1])
    return sum(terms) / len(terms), len(terms)


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_the_loss_over_every_position_of_a_two_user_batch_by_hand(loss):
    torch.manual_seed(0)
    net = SASRecNet(6, SMALL).eval()  # eval: no dropout, so the hand pass sees the same function
    sequences = [[1, 2, 3, 4, 5], [3, 6, 2]]  # user 2 is shorter: padded, masked
    inputs = sequence_batch([s[:-1] for s in sequences], 4)
    targets = sequence_batch([s[1:] for s in sequences], 4)
    negatives = torch.tensor([[6, 6, 1, 2], [1, 4, 0, 0]])
    assert inputs.tolist() == [[1, 2, 3, 4], [3, 6, 0, 0]]
    expected, positions = _hand_loss(net, inputs, targets, negatives, loss)
    assert positions == 6  # 4 + 2: the padding positions carry no loss
    got = position_loss(net, inputs, targets, loss, negatives if loss == "bce" else None)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)
    if loss == "bce":  # a negative at a padding position changes nothing
        padded = negatives.clone()
        padded[1, 2:] = 5
        assert float(position_loss(net, inputs, targets, loss, padded)) == pytest.approx(expected)


def _split():
    rows = [
        (f"u{u}", str(i), float(t))
        for u in range(30)
        for t, i in enumerate((u + np.arange(12) * (1 + u % 3)) % 20)
    ]
    return labelled_split(
        leave_one_out_split(interactions_frame(rows)), [f"t{i}" for i in range(20)]
    )


@pytest.mark.parametrize("negatives", ["per_position", "per_sequence"])
def test_negatives_fall_outside_the_users_sequence(negatives):
    model = NativeSASRec(SasrecConfig(negatives=negatives), 0, "cpu", "ndcg_at_10")
    model._index(_split())
    batch = [[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]]
    targets = sequence_batch([s[1:] for s in batch], 6)
    drawn = model._negatives(batch, targets, torch.Generator().manual_seed(0))
    for row, seq in enumerate(batch):
        mine = drawn[row][targets[row] != 0]
        assert not set(mine.tolist()) & set(seq) and (mine > 0).all()
        assert (drawn[row][targets[row] == 0] == 0).all()
        if negatives == "per_sequence":
            assert len(set(mine.tolist())) == 1


def test_a_short_training_learns_and_ranks_through_the_evaluator(tmp_path):
    split = _split()
    for loss, block in (("bce", "recbole"), ("ce", "recbole"), ("ce", "paper")):
        model = NativeSASRec(
            SasrecConfig(loss=loss, max_len=10, hidden_size=16, inner_size=32, epochs=15,
                         batch_size=8, learning_rate=5e-3, block=block),
            0, "cpu", "ndcg_at_10",
        )  # fmt: skip
        loss = f"{loss}_{block}"
        info = model.fit(split, tmp_path / loss)
        curve = [p["ndcg_at_10"] for p in info["valid_curve"]]
        assert info["best_valid_ndcg_at_10"] == max(curve) and curve[-1] > curve[0]
        history = split.history("test")
        rankings = model.rank({u: history[u] for u in split.targets("test")}, 5)
        _, summary = evaluate_rankings(rankings, split, "test", [5])  # the protocol's checks
        assert summary["n_users"] == 30
        (tmp_path / f"{loss}_x").mkdir()
        exported = model.export(tmp_path / f"{loss}_x", split)
        assert set(exported) == {"scores_valid", "scores_test", "item_embeddings"}
        assert np.load(tmp_path / f"{loss}_x" / "item_embeddings.npy").shape == (20, 16)
    pd.testing.assert_frame_equal(
        rankings, model.rank({u: history[u] for u in split.targets("test")}, 5)
    )


def _layer_norm(x, norm):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    weight, bias = norm.weight.detach().numpy(), norm.bias.detach().numpy()
    return (x - mean) / np.sqrt(var + norm.eps) * weight + bias


def test_the_paper_block_is_its_equations():
    # one block, one head, eval mode: the SASRec paper's forward written out in numpy
    cfg = SasrecConfig(max_len=4, hidden_size=8, inner_size=8, n_layers=1, n_heads=1, block="paper")
    torch.manual_seed(1)
    net = PaperSASRecNet(6, cfg).eval()
    for p in net.parameters():  # no zero biases or unit norms: every term shows
        p.data.add_(0.1 * torch.randn_like(p))
    net.item_embedding.weight.data[0].zero_()
    items = torch.tensor([[3, 1, 5, 0]])  # a user of 3 items, padded
    with torch.no_grad():
        got = net(items)[0].numpy()
        emb, pos = net.item_embedding.weight.numpy(), net.position_embedding.weight.numpy()
        attention = net.attentions[0]
        wq, wk, wv = np.split(attention.in_proj_weight.numpy(), 3)
        bq, bk, bv = np.split(attention.in_proj_bias.numpy(), 3)
        wo, bo = attention.out_proj.weight.numpy(), attention.out_proj.bias.numpy()
        ff = net.feed_forwards[0]
        w1, b1, w2, b2 = (
            ff[0].weight.numpy(),
            ff[0].bias.numpy(),
            ff[3].weight.numpy(),
            ff[3].bias.numpy(),
        )
    x = emb[[3, 1, 5, 0]] * math.sqrt(8) + pos[:4]
    x[3] = 0  # padding zeroed
    queries = _layer_norm(x, net.attention_norms[0])
    q, k, v = queries @ wq.T + bq, x @ wk.T + bk, x @ wv.T + bv
    logits = q @ k.T / math.sqrt(8)
    logits[np.triu_indices(4, 1)] = -np.inf  # causal
    weights = np.exp(logits - logits.max(1, keepdims=True))
    weights /= weights.sum(1, keepdims=True)
    h = _layer_norm(queries + (weights @ v) @ wo.T + bo, net.forward_norms[0])
    h = h + np.maximum(h @ w1.T + b1, 0) @ w2.T + b2
    h[3] = 0
    expected = _layer_norm(h, net.last_norm)
    np.testing.assert_allclose(got[:3], expected[:3], rtol=1e-4, atol=1e-5)
    # causal: a later item changes nothing before it
    with torch.no_grad():
        changed = net(torch.tensor([[3, 1, 2, 0]]))[0].numpy()
    np.testing.assert_allclose(changed[:2], got[:2], rtol=1e-6, atol=1e-6)
    assert not np.allclose(changed[2], got[2])
