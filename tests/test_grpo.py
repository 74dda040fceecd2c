"""GRPO's parts (llm4rec.llm.grpo) against hand computation: advantages, the loss's gradient on a
3-item toy policy, KL at step 0, the constrained sampler's support and frequencies (chi-square
against the exact probabilities), every reward, and a toy policy learning a cyclic sequence."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from llm4rec.llm.grpo import (
    combine_rewards,
    group_advantages,
    grpo_loss,
    hit_reward,
    item_probabilities,
    ndcg_reward,
    rank_penalty_reward,
    sample_items,
    validity_reward,
    zero_advantage_share,
)
from llm4rec.llm.trie import ItemTrie

END = 9


def test_advantages_are_zero_mean_within_each_group_and_zero_without_spread():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [2.0, -1.0, 0.0, 3.0]])
    adv = group_advantages(rewards)
    torch.testing.assert_close(adv.mean(dim=1), torch.zeros(3), atol=1e-6, rtol=0)
    assert torch.equal(adv[1], torch.zeros(4))
    # by hand: mean 0.25, population std sqrt(0.1875)
    expected = (torch.tensor([1.0, 0.0, 0.0, 0.0]) - 0.25) / (math.sqrt(0.1875) + 1e-6)
    torch.testing.assert_close(adv[0], expected)
    assert zero_advantage_share(adv) == pytest.approx(1 / 3)


def test_loss_gradient_equals_the_hand_computed_one_on_a_three_item_policy():
    """One-token items, policy softmax(theta). At theta = theta_old = theta_ref the ratio is 1 and
    KL's gradient is 0, so d loss / d theta = -(1/G) sum_i A_i (e_{a_i} - p)."""
    theta = torch.tensor([0.2, -0.4, 0.9], requires_grad=True)
    actions = torch.tensor([0, 2, 2, 1])
    advantages = torch.tensor([1.5, -0.5, -0.5, -0.5])
    logp = torch.log_softmax(theta, dim=0)[actions][:, None]
    old = logp.detach().clone()
    loss, info = grpo_loss(logp, old, old, advantages, torch.ones(4, 1), clip=0.2, kl_coef=0.1)
    loss.backward()
    p = torch.softmax(theta.detach(), dim=0).numpy()
    onehot = np.eye(3)[actions.numpy()]
    expected = -(advantages.numpy()[:, None] * (onehot - p)).mean(axis=0)
    np.testing.assert_allclose(theta.grad.numpy(), expected, rtol=1e-5, atol=1e-7)
    assert info.kl == 0.0 and info.clip_fraction == 0.0
    assert info.loss == pytest.approx(-float(advantages.mean()))


def test_clipping_and_kl_away_from_step_zero():
    """A ratio beyond 1 + clip with a positive advantage is clipped (no gradient); KL is the k3
    estimator exp(r) - r - 1 with r = ref - new."""
    logp = torch.tensor([[math.log(0.6)]], requires_grad=True)
    old = torch.tensor([[math.log(0.4)]])
    ref = torch.tensor([[math.log(0.5)]])
    loss, info = grpo_loss(logp, old, ref, torch.tensor([1.0]), torch.ones(1, 1), 0.2, 0.0)
    loss.backward()
    assert info.clip_fraction == 1.0 and float(logp.grad) == 0.0
    assert loss.item() == pytest.approx(-1.2)
    r = math.log(0.5) - math.log(0.6)
    assert info.kl == pytest.approx(math.exp(r) - r - 1, rel=1e-5)  # float32


def toy_trie():
    """Five items, one or two tokens each (every sequence ends with END)."""
    return ItemTrie.build(
        {"a": [1, END], "b": [2, 3, END], "c": [2, 4, END], "d": [5, END], "e": [2, 6, END]}
    )


def toy_policy(prefixes):
    """Fixed next-token log-probabilities depending on the last token of the prefix."""
    out = []
    for prefix in prefixes:
        g = torch.Generator().manual_seed(100 + (prefix[-1] if prefix else 0))
        out.append(torch.log_softmax(torch.randn(10, generator=g) * 2, dim=0))
    return torch.stack(out)


def test_the_sampler_draws_catalogue_items_outside_the_history_at_the_policy_s_frequencies():
    trie, history = toy_trie(), ["c"]
    exact = item_probabilities(toy_policy, trie, history, temperature=1.3)
    assert set(exact) == {"a", "b", "d", "e"} and sum(exact.values()) == pytest.approx(1.0)
    generator = torch.Generator().manual_seed(0)
    draws = sample_items(toy_policy, trie, history, 4000, 1.3, generator)
    items = [d.item for d in draws]
    assert set(items) <= set(exact)  # never a history item, never outside the catalogue
    counts = np.array([items.count(i) for i in sorted(exact)])
    expected = np.array([exact[i] for i in sorted(exact)], dtype=float)
    expected *= len(items) / expected.sum()  # float32 probabilities sum to 1 within 1e-7
    assert stats.chisquare(counts, expected).pvalue > 1e-3
    # the recorded log-probabilities are the constrained policy's at temperature 1
    at_one = item_probabilities(toy_policy, trie, history, temperature=1.0)
    for d in draws[:20]:
        assert d.log_prob == pytest.approx(math.log(at_one[d.item]), abs=1e-5)


def test_rewards_by_hand():
    items, target, history = ["x", "t", "h", "y"], "t", ["h"]
    np.testing.assert_array_equal(hit_reward(items, target, history), [0, 1, 0, 0])
    np.testing.assert_array_equal(hit_reward(["h"], "h", ["h"]), [0])  # history never rewarded
    # ranks by log-prob: y (rank 1), x (2), t (3), h (4); weights 1/log2(r + 1)
    w = {1: 1.0, 2: 1 / math.log2(3), 3: 0.5, 4: 1 / math.log2(5)}
    total = sum(w.values())
    # MiniOneRec's ranking penalty: wrong completions of a group that names the target, by rank;
    # the target's 0 (the hit reward pays it); a group without the target all 0
    rewards = rank_penalty_reward(items, [-1.0, -2.0, -3.0, -0.5], target, history)
    np.testing.assert_allclose(rewards, [-w[2] / total, 0.0, -w[4] / total, -w[1] / total])
    assert rank_penalty_reward(["x", "y"], [-1.0, -2.0], "t").tolist() == [0.0, 0.0]
    lists = [["t", "x"], ["x", "y", "t"], ["x", "y"], ["h", "t"]]
    np.testing.assert_allclose(ndcg_reward(lists, "t", k=2), [1.0, 0.0, 0.0, 1 / math.log2(3)])
    np.testing.assert_array_equal(
        validity_reward(["a", None, "zz", "h"], {"a", "h"}, ["h"]), [1, 0, 0, 0]
    )
    parts = {"hit": np.array([0.0, 1.0]), "validity": np.array([1.0, 1.0])}
    np.testing.assert_allclose(combine_rewards(parts, {"hit": 1.0, "validity": 0.1}), [0.1, 1.1])
    with pytest.raises(ValueError, match="reward 'ndcg' was not computed"):
        combine_rewards(parts, {"ndcg": 1.0})


def test_grpo_with_a_hit_reward_learns_a_cyclic_sequence():
    """Items 0..5 on a cycle (each user's next item is the one after the last); the policy is a
    table of next-item logits per last item, trained by GRPO from a uniform start. Its
    probability of the right next item rises from 1/6 to most of the mass."""
    n, group = 6, 8
    trie = ItemTrie.build({str(i): [i, END] for i in range(n)})
    table = torch.zeros(n, 10, requires_grad=True)
    optimiser = torch.optim.Adam([table], lr=0.1)
    generator = torch.Generator().manual_seed(0)

    def policy_for(last):
        return lambda prefixes: torch.log_softmax(table[last].detach(), dim=0).expand(
            len(prefixes), 10
        )

    def p_correct():
        with torch.no_grad():
            return float(
                np.mean([torch.softmax(table[i, :n], 0)[(i + 1) % n].item() for i in range(n)])
            )

    before = p_correct()
    for _ in range(40):
        logps, olds, advantages = [], [], []
        for last in range(n):
            draws = sample_items(policy_for(last), trie, [], group, 1.0, generator)
            rewards = hit_reward([d.item for d in draws], str((last + 1) % n))
            adv = group_advantages(torch.tensor(rewards, dtype=torch.float32)[None])[0]
            allowed = torch.log_softmax(table[last, :n], dim=0)
            for d, a in zip(draws, adv, strict=True):
                logps.append(allowed[int(d.item)])
                olds.append(d.log_prob)
                advantages.append(a)
        logp = torch.stack(logps)[:, None]
        loss, _ = grpo_loss(
            logp,
            torch.tensor(olds)[:, None],
            logp.detach(),
            torch.stack(advantages),
            torch.ones_like(logp),
            0.2,
            0.0,
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert before == pytest.approx(1 / n)
    assert p_correct() > 0.6


def test_sampled_and_teacher_forced_log_probs_agree_on_a_t5_policy():
    """TIGER's side: a tiny random T5 samples code tuples under the trie (catalogue items outside
    the history), and the teacher-forced constrained log-probabilities the loss differentiates
    equal the sampler's, so the policy ratio is exactly 1 before the first update."""
    from transformers import T5Config, T5ForConditionalGeneration

    from llm4rec.llm.grpo import completion_log_probs
    from llm4rec.llm.seq2seq import seq2seq_log_probs

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=12,
        d_model=16,
        d_ff=32,
        d_kv=8,
        num_heads=2,
        num_layers=1,
        num_decoder_layers=1,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    model = T5ForConditionalGeneration(config).eval()
    end = 2
    codes = {"i0": [3, 5, end], "i1": [3, 6, end], "i2": [4, 5, end], "i3": [4, 7, end]}
    trie, history = ItemTrie.build(codes), ["i1"]
    prompt = torch.tensor([[3, 5, 4, 7, 1]])
    with torch.no_grad():
        draws = sample_items(
            lambda prefixes: seq2seq_log_probs(model, prompt, prefixes)[:, -1],
            trie,
            history,
            16,
            1.0,
            torch.Generator().manual_seed(1),
        )
    assert {d.item for d in draws} <= {"i0", "i2", "i3"}
    assert all(list(d.tokens) == codes[d.item] for d in draws)
    full = seq2seq_log_probs(model, prompt, [list(d.tokens[:-1]) for d in draws])
    logp, mask = completion_log_probs(full, draws, trie, history)
    sampled = torch.tensor([d.token_log_probs for d in draws])
    torch.testing.assert_close(logp, sampled, atol=1e-5, rtol=0)
    assert torch.equal(mask, torch.ones(16, 3))
    logp.sum().backward()
    assert model.decoder.block[0].layer[0].SelfAttention.q.weight.grad.abs().sum() > 0


def test_the_unconstrained_sampler_names_no_item_off_the_trie_or_in_the_history():
    """Without the trie constraint a completion may leave the catalogue (its item is None, it ends
    at the first token off the trie) or end on a history item (None too); its log-probabilities
    are the full vocabulary's, which the teacher-forced ones equal."""
    from llm4rec.llm.grpo import completion_log_probs

    trie, history = toy_trie(), ["c"]
    draws = sample_items(
        toy_policy, trie, history, 400, 1.0, torch.Generator().manual_seed(0), constrained=False
    )
    named = {d.item for d in draws}
    assert None in named and named - {None} <= {"a", "b", "d", "e"}
    for d in draws:
        node = 0  # walk the tokens: on the trie up to the last, which ends an item or leaves it
        for token in d.tokens[:-1]:
            node = trie.children[node][token]
        last = trie.children[node].get(d.tokens[-1])
        reached = trie.item_at.get(last) if last is not None else None
        assert d.item == (None if reached in (None, "c") else reached)
        expected = [float(toy_policy([list(d.tokens[:j])])[0, t]) for j, t in enumerate(d.tokens)]
        assert d.token_log_probs == pytest.approx(expected, abs=1e-6)
    batch = draws[:30]
    full = torch.stack(
        [torch.cat([toy_policy([list(d.tokens[:j])]) for j in range(3)]) for d in batch]
    )
    logp, mask = completion_log_probs(full, batch, trie, history, constrained=False)
    for row, d in enumerate(batch):
        n = len(d.tokens)
        assert mask[row].tolist() == [1.0] * n + [0.0] * (3 - n)
        assert logp[row, :n].tolist() == pytest.approx(list(d.token_log_probs), abs=1e-6)
    validity = validity_reward([d.item for d in batch], {"a", "b", "c", "d", "e"}, history)
    assert validity.tolist() == [float(d.item is not None) for d in batch]


def test_group_rank_rewards_by_hand():
    from llm4rec.llm.grpo import (
        Completion,
        group_ndcg_reward,
        group_ranks,
        group_rewards,
        rank_bin_reward,
    )

    # distinct items by their best log-prob: y (-0.5), x (-1), t (-2), then None (invalid) last
    items = ["x", "t", "x", "y", None, "h"]
    logps = [-1.0, -2.0, -1.5, -0.5, -0.1, -3.0]
    assert group_ranks(items, logps).tolist() == [2, 3, 2, 1, 5, 4]
    hit = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    # NDCG@k of the group's list, credited to the target's completion: rank 3 -> 1/log2(4)
    assert group_ndcg_reward(items, logps, "t", 10).tolist() == [h * 0.5 for h in hit]
    assert group_ndcg_reward(items, logps, "t", 2).tolist() == [0.0] * 6  # beyond the cutoff
    bins = [[1, 1.0], [3, 0.4], [10, 0.1]]
    assert rank_bin_reward(items, logps, "t", bins).tolist() == [h * 0.4 for h in hit]
    assert rank_bin_reward(items, logps, "y", bins).tolist() == [0, 0, 0, 1.0, 0, 0]
    assert rank_bin_reward(items, logps, "h", bins, history=["h"]).tolist() == [0.0] * 6
    group = [Completion(i, (1,), (lp,)) for i, lp in zip(items, logps, strict=True)]
    total, parts = group_rewards(
        group, "t", ["h"], {"x", "t", "y", "h"}, {"hit": 1.0, "validity": 0.5}
    )
    assert parts["hit"].tolist() == hit
    assert parts["validity"].tolist() == [1, 1, 1, 1, 0, 0]
    assert total.tolist() == [0.5, 1.5, 0.5, 0.5, 0.0, 0.0]
    with pytest.raises(ValueError, match="reward 'recall' is not one of"):
        group_rewards(group, "t", [], set(), {"recall": 1.0})


def test_entropy_of_the_constrained_policy_by_hand():
    """Two first tokens allowed (1 and 2 -> a; 2 -> b, e after c is excluded): the entropy at
    each position is that of the distribution renormalised over the allowed tokens."""
    from llm4rec.llm.grpo import Completion, completion_entropy, policy_distributions

    trie = toy_trie()
    full = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0, 0.5, 0.0, 3.0, 1.5, 0, 0, 0.2]), dim=0)
    logits = full.expand(1, 3, 10)
    total, count = completion_entropy(
        policy_distributions(
            logits, [Completion("b", (2, 3, END), (0.0, 0.0, 0.0))], trie, ["c", "e"]
        )
    )

    def entropy(tokens):
        p = torch.softmax(full[tokens], dim=0)
        return float(-(p * p.log()).sum())

    # position 0: tokens 1, 2, 5 (a; b under 2; d); position 1: only 3 (b); position 2: END
    assert count == 3
    assert total == pytest.approx(entropy([1, 2, 5]) + 0.0 + 0.0, abs=1e-6)


def test_continuation_log_probs_equal_unpadded_forwards_of_each_row():
    """The RL loop's forward: rows of different prompt and continuation lengths batched (right
    padding) give each row what it gets alone, for a causal LM and an encoder-decoder."""
    from transformers import T5Config, T5ForConditionalGeneration

    from llm4rec.llm.rl import continuation_log_probs

    from .helpers import tiny_backbone

    llama, _ = tiny_backbone([f"w{i}" for i in range(20)], layers=1)
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(
        T5Config(
            vocab_size=24, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1,
            num_decoder_layers=1, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
    ).eval()  # fmt: skip
    prompts, continuations = [[5, 6, 7], [8, 9], [10, 11, 12, 13]], [[4], [5, 6, 7], [14, 15]]
    for model in (llama, t5):
        with torch.no_grad():
            batched = continuation_log_probs(model, prompts, continuations, pad_id=0)
            assert batched.shape[:2] == (3, 4)
            for row, (prompt, cont) in enumerate(zip(prompts, continuations, strict=True)):
                alone = continuation_log_probs(model, [prompt], [cont], pad_id=0)[0]
                n = len(cont) + 1
                torch.testing.assert_close(batched[row, :n], alone[:n], atol=1e-5, rtol=0)
                if model is llama:  # by hand: the causal LM on prompt + continuation
                    logits = model(input_ids=torch.tensor([prompt + cont])).logits[0]
                    expected = torch.log_softmax(logits[len(prompt) - 1 :], -1)
                    torch.testing.assert_close(alone[:n], expected, atol=1e-5, rtol=0)


def test_beam_groups_are_the_most_probable_items_outside_the_history():
    """MiniOneRec's groups: the top-G items of the constrained policy by beam search; on a trie
    this small a beam as wide as the catalogue is exhaustive, so the groups are the exact
    probabilities' top G, most probable first, with their exact log-probabilities."""
    from llm4rec.llm.grpo import beam_groups

    trie, histories = toy_trie(), [["c"], []]
    groups = beam_groups(
        lambda rows: toy_policy([prefix for _, prefix in rows]), trie, histories, 5
    )
    for group, history in zip(groups, histories, strict=True):
        exact = item_probabilities(toy_policy, trie, history)
        ranked = sorted(exact, key=lambda i: -exact[i])
        assert [c.item for c in group] == ranked  # every item outside the history, in order
        for c in group:
            assert c.log_prob == pytest.approx(math.log(exact[c.item]), abs=1e-5)
    narrow = beam_groups(lambda rows: toy_policy([p for _, p in rows]), trie, [["c"]], 2)[0]
    assert len({c.item for c in narrow}) == 2 and "c" not in {c.item for c in narrow}


@pytest.mark.parametrize("sampler", ["beam", "sample"])
def test_a_step_in_chunks_equals_the_step_in_one_pass_and_no_pass_exceeds_the_chunk(
    sampler, monkeypatch
):
    """GRPO's memory is bounded by `micro_prompts`: no forward pass of the policy or the reference
    holds more than micro_prompts x group_size rows (sampling included), and the step it takes
    (accumulated over the chunks, with and without gradient checkpointing) moves every weight as
    the whole step in one pass does (float noise of the summation order aside). Plain SGD stands in
    for AdamW here: Adam's first step is lr x g / (|g| + eps), which turns the float noise of a
    near-zero gradient into a difference of order lr."""
    import copy

    from llm4rec.llm.rl import GrpoConfig, train_grpo

    from .helpers import tiny_backbone

    monkeypatch.setattr(
        torch.optim, "AdamW", lambda params, lr, weight_decay: torch.optim.SGD(params, lr=lr)
    )
    words = [f"w{i}" for i in range(12)]
    base, tokenizer = tiny_backbone(words, layers=2, init_std=0.2)
    ids = {w: tokenizer(w, add_special_tokens=False).input_ids for w in words}
    trie = ItemTrie.build({w: ids[w] + [tokenizer.eos_token_id] for w in words[:8]})
    windows = [(f"u{u}", [words[u % 8], words[(u + 1) % 8]], words[(u + 2) % 8]) for u in range(6)]

    def prompt_of(user, history):
        return [ids[w][0] for w in ["w9", *history, "w10"]]

    def run(micro, checkpointing):
        model, reference = copy.deepcopy(base), copy.deepcopy(base)
        rows = []
        for net in (model, reference):
            net.register_forward_pre_hook(
                lambda m, args, kwargs: rows.append(len(kwargs["input_ids"])), with_kwargs=True
            )
        cfg = GrpoConfig(
            steps=2, prompts_per_step=4, group_size=3, sampler=sampler, learning_rate=1.0,
            rewards={"hit": 1.0, "rank_penalty": 1.0}, micro_prompts=micro,
            gradient_checkpointing=checkpointing, max_grad_norm=None, eval_every=100,
        )  # fmt: skip
        result = train_grpo(model, reference, prompt_of, windows, trie, cfg, 0, 0, progress=False)
        return model, rows, result.log

    whole, whole_rows, whole_log = run(None, False)
    assert max(whole_rows) == 12  # 4 prompts x 3 in one pass
    for micro, checkpointing in ((1, False), (2, True)):
        chunked, rows, log = run(micro, checkpointing)
        assert max(rows) <= micro * 3
        for (name, a), b in zip(whole.named_parameters(), chunked.parameters(), strict=True):
            torch.testing.assert_close(
                a, b, atol=1e-6, rtol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
            )
            assert not torch.equal(a, base.get_parameter(name)) or "embed" in name
        for key in ("reward", "loss", "entropy"):
            assert [e[key] for e in log] == pytest.approx([e[key] for e in whole_log], abs=1e-6)


@pytest.mark.parametrize("architecture", ["llama", "t5"])
def test_prompt_states_give_the_next_token_log_probs_feeding_only_the_continuation(architecture):
    """The sampler reads each prompt once: `next_log_probs` equals teacher forcing over prompt +
    prefix (`continuation_log_probs`, the policy pass's computation) for rows of mixed prompts and
    prefix lengths, and after the prompts' one pass a call feeds only the prefixes' tokens."""
    from transformers import T5Config, T5ForConditionalGeneration

    from llm4rec.llm.rl import PromptStates, continuation_log_probs

    from .helpers import tiny_backbone

    if architecture == "llama":
        model, _ = tiny_backbone([f"w{i}" for i in range(20)], init_std=0.3)
    else:
        torch.manual_seed(0)
        config = T5Config(
            vocab_size=24, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=2,
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )  # fmt: skip
        model = T5ForConditionalGeneration(config).eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    rows = [(0, []), (1, [15]), (2, [16, 17]), (0, [18, 19, 20]), (1, [])]
    fed = []
    model.register_forward_pre_hook(
        lambda m, args, kwargs: fed.append(
            kwargs["input_ids"].numel()
            if kwargs.get("input_ids") is not None
            else kwargs["decoder_input_ids"].numel()
        ),
        with_kwargs=True,
    )
    with torch.no_grad():
        states = PromptStates(model, prompts, pad_id=0, chunk=2)
        fed.clear()
        got = states.next_log_probs([p for p, _ in rows], [prefix for _, prefix in rows])
        full = continuation_log_probs(model, [prompts[p] for p, _ in rows], [c for _, c in rows], 0)
    want = full[torch.arange(len(rows)), torch.tensor([len(c) for _, c in rows])]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the sampler's call fed rows x (longest prefix), plus T5's start token; the teacher-forced
    # pass fed every prompt again
    assert fed[0] == len(rows) * (3 + (architecture == "t5")) < fed[1]
