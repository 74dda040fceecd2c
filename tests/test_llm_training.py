"""SFT: target-only loss, LoRA learns on a tiny fixture, resuming equals an uninterrupted run."""

import pytest
import torch

from llm4rec.llm.backbone import LoraSettings, add_lora
from llm4rec.llm.training import (
    SFTConfig,
    checkpoint_fingerprint,
    encode_example,
    load_checkpoint,
    sliding_window_examples,
    train_sft,
)

from .helpers import tiny_backbone

WORDS = "history next : the red car blue sky house night returns".split()


def fixture(tokenizer):
    sequences = {
        "u1": ["the red car", "blue sky", "the red house", "night returns"],
        "u2": ["blue sky", "the red car", "house"],
    }
    windows = sliding_window_examples(sequences, max_history=2)
    encoded = []
    for _, history, target in windows:
        prompt = tokenizer(
            "history : " + " ; ".join(history) + " next :", add_special_tokens=False
        ).input_ids
        encoded.append(
            encode_example(
                prompt,
                tokenizer(target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id],
            )
        )
    return windows, encoded


def lora_model(seed=0, dropout=0.0):
    model, tokenizer = tiny_backbone(WORDS + [";"], seed=seed, init_std=0.1)
    return add_lora(
        model, LoraSettings(rank=4, alpha=8, dropout=dropout, target_modules=["q_proj", "v_proj"])
    ), tokenizer


def mean_loss(model, encoded, pad_id):
    from llm4rec.llm.training import collate

    with torch.no_grad():
        return float(model(**collate(encoded, pad_id, "cpu")).loss)


def test_sliding_windows_come_from_training_order_only():
    windows = sliding_window_examples({"u": ["a", "b", "c", "d"]}, max_history=2)
    assert windows == [("u", ["a"], "b"), ("u", ["a", "b"], "c"), ("u", ["b", "c"], "d")]


def test_lora_training_reduces_loss_and_touches_only_adapters():
    model, tokenizer = lora_model()
    _, encoded = fixture(tokenizer)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen_before = {
        n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad
    }
    before = mean_loss(model, encoded, tokenizer.pad_token_id)
    train_sft(
        model,
        encoded,
        SFTConfig(steps=60, batch_size=4, learning_rate=5e-3),
        tokenizer.pad_token_id,
        progress=False,
    )
    after = mean_loss(model, encoded, tokenizer.pad_token_id)
    assert after < 0.7 * before, (before, after)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[name]), name


def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path):
    cfg = SFTConfig(
        steps=6, batch_size=2, grad_accum=2, learning_rate=3e-3, checkpoint_every=2, seed=1
    )
    model_a, tokenizer = lora_model(seed=2)
    _, encoded = fixture(tokenizer)
    losses_a = train_sft(model_a, encoded, cfg, tokenizer.pad_token_id, progress=False).losses

    model_b, _ = lora_model(seed=2)
    interrupted = SFTConfig(**{**cfg.__dict__, "steps": 4})
    train_sft(
        model_b,
        encoded,
        interrupted,
        tokenizer.pad_token_id,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    (
        tmp_path / ".last.killed-mid-save"
    ).mkdir()  # a half-written checkpoint from a killed run is ignored
    model_c, _ = lora_model(seed=2)
    losses_c = train_sft(
        model_c, encoded, cfg, tokenizer.pad_token_id, checkpoint_dir=tmp_path, progress=False
    ).losses
    assert len(losses_c) == 2  # resumed at step 4 of 6
    assert losses_c == losses_a[4:]
    for (name, a), (_, c) in zip(
        model_a.named_parameters(), model_c.named_parameters(), strict=True
    ):
        if a.requires_grad:
            torch.testing.assert_close(a, c, rtol=0, atol=0, msg=name)
    optimizer = torch.optim.AdamW([p for p in model_c.parameters() if p.requires_grad])
    assert load_checkpoint(tmp_path, model_c, optimizer, checkpoint_fingerprint(cfg)) == 6


def test_resume_with_dropout_in_a_new_process_equals_uninterrupted_run(tmp_path):
    """A killed job resumes in a new process, whose RNG is not where the killed one's was: the
    checkpoint carries the RNG state, so LoRA dropout draws the same masks as without the kill."""
    cfg = SFTConfig(steps=6, batch_size=2, learning_rate=3e-3, checkpoint_every=3, seed=1)
    model_a, tokenizer = lora_model(seed=2, dropout=0.3)
    _, encoded = fixture(tokenizer)
    torch.manual_seed(0)
    losses_a = train_sft(model_a, encoded, cfg, tokenizer.pad_token_id, progress=False).losses
    model_b, _ = lora_model(seed=2, dropout=0.3)
    torch.manual_seed(0)
    train_sft(
        model_b,
        encoded,
        SFTConfig(**{**cfg.__dict__, "steps": 3}),
        tokenizer.pad_token_id,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    model_c, _ = lora_model(seed=2, dropout=0.3)
    torch.manual_seed(12345)  # "another process"
    losses_c = train_sft(
        model_c, encoded, cfg, tokenizer.pad_token_id, checkpoint_dir=tmp_path, progress=False
    ).losses
    assert losses_c == losses_a[3:]
    for (name, a), (_, c) in zip(
        model_a.named_parameters(), model_c.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a, c, rtol=0, atol=0, msg=name)


def test_token_count_is_the_non_padding_tokens_of_the_examples_seen():
    """Two full epochs (steps x batch = 2 x examples): every example is seen exactly twice."""
    model, tokenizer = lora_model()
    _, encoded = fixture(tokenizer)
    encoded = encoded[: len(encoded) // 2 * 2]
    result = train_sft(
        model,
        encoded,
        SFTConfig(steps=len(encoded), batch_size=2, learning_rate=1e-3),
        tokenizer.pad_token_id,
        progress=False,
    )
    assert len(result.losses) == len(encoded)
    assert result.tokens == 2 * sum(len(ids) for ids, _ in encoded)


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    """A rerun with a changed learning rate, prompt or data (another fingerprint) restarts from
    step 0 and equals a fresh run; it never continues the old run's weights."""
    cfg = SFTConfig(steps=4, batch_size=2, learning_rate=3e-3, checkpoint_every=2)
    model_a, tokenizer = lora_model(seed=2)
    _, encoded = fixture(tokenizer)
    train_sft(
        model_a,
        encoded,
        cfg,
        tokenizer.pad_token_id,
        checkpoint_dir=tmp_path,
        progress=False,
        fingerprint="data-a",
    )
    changed = SFTConfig(**{**cfg.__dict__, "learning_rate": 1e-3})
    model_b, _ = lora_model(seed=2)
    resumed = train_sft(
        model_b,
        encoded,
        changed,
        tokenizer.pad_token_id,
        checkpoint_dir=tmp_path,
        progress=False,
        fingerprint="data-a",
    )
    model_c, _ = lora_model(seed=2)
    fresh = train_sft(
        model_c, encoded, changed, tokenizer.pad_token_id, progress=False, fingerprint="data-a"
    )
    assert len(resumed.losses) == 4 and resumed.losses == fresh.losses
    model_d, _ = lora_model(seed=2)
    other_data = train_sft(
        model_d,
        encoded,
        changed,
        tokenizer.pad_token_id,
        checkpoint_dir=tmp_path,
        progress=False,
        fingerprint="data-b",
    )
    assert len(other_data.losses) == 4


def test_a_paradigm_loss_replaces_the_backbone_cross_entropy():
    """train_sft optimises the loss a paradigm passes (here: a softmax restricted to a few
    "item" tokens at the last position) and reports it; the default equals causal_lm_loss."""
    from llm4rec.llm.training import causal_lm_loss

    items = torch.tensor([4, 5, 6, 7])

    def restricted(model, examples, step=0):
        ids = torch.tensor([e[0] for e in examples])
        # predicts the last token, among `items` only
        logits = model(input_ids=ids).logits[:, -2, items]
        targets = torch.tensor([int((items == e[0][-1]).nonzero()) for e in examples])
        return torch.nn.functional.cross_entropy(logits, targets), ids.numel()

    examples = [([8, 9, int(items[i % 4])], None) for i in range(8)]
    model, tokenizer = lora_model()
    before, _ = restricted(model, examples)
    result = train_sft(
        model,
        examples,
        SFTConfig(steps=30, batch_size=8, learning_rate=1e-2),
        tokenizer.pad_token_id,
        progress=False,
        loss_fn=restricted,
    )
    assert (
        result.losses[0] == pytest.approx(float(before), abs=1e-6) and result.tokens == 30 * 8 * 3
    )
    assert restricted(model, examples)[0] < before
    _, encoded = fixture(tokenizer)
    default, explicit = lora_model(seed=1), lora_model(seed=1)
    cfg = SFTConfig(steps=4, batch_size=2, learning_rate=1e-3)
    a = train_sft(default[0], encoded, cfg, tokenizer.pad_token_id, progress=False)
    b = train_sft(
        explicit[0],
        encoded,
        cfg,
        tokenizer.pad_token_id,
        progress=False,
        loss_fn=causal_lm_loss(tokenizer.pad_token_id, "cpu"),
    )
    assert a.losses == b.losses and a.tokens == b.tokens


@pytest.mark.parametrize("wrapping", ["bare", "lora", "lora+new token rows"])
def test_labelled_token_loss_equals_the_backbones_own_and_heads_only_labelled_positions(wrapping):
    """Loss and gradients equal the model's own cross-entropy over full logits; the LM head is
    fed the labelled positions only (one row per labelled token, not batch x length)."""
    from llm4rec.llm.training import collate, labelled_token_loss

    model, tokenizer = tiny_backbone(WORDS + [";"], seed=3, init_std=0.1)
    if wrapping != "bare":
        rows = [tokenizer.convert_tokens_to_ids("house")] if "rows" in wrapping else None
        model = add_lora(
            model, LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules=["q_proj"]), rows
        )
    _, encoded = fixture(tokenizer)
    batch = collate(encoded, tokenizer.pad_token_id, "cpu")
    labels = batch.pop("labels")
    trainable = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
    for param in trainable:
        param.requires_grad_(True)

    expected = model(**batch, labels=labels).loss
    expected_grads = torch.autograd.grad(expected, trainable)
    fed = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: fed.append(tuple(args[0].shape))
    )
    loss = labelled_token_loss(model, labels, **batch)
    hook.remove()
    grads = torch.autograd.grad(loss, trainable)

    assert torch.allclose(loss, expected, rtol=1e-6, atol=1e-7)
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    labelled = int((labels[:, 1:] != -100).sum())
    # the model's forward keeps one position a row; the loss's head call sees the labelled ones
    assert fed[-1] == (labelled, model.config.hidden_size) and labelled < labels.numel() / 2


def test_loss_is_on_target_tokens_only_examples_are_int32_and_their_hash_reads_every_token():
    import numpy as np

    from llm4rec.io import sequence_hash

    ids, labels = encode_example([7, 300, 9], [4001, 3])
    assert ids.dtype == labels.dtype == np.int32
    assert ids.tolist() == [7, 300, 9, 4001, 3] and labels.tolist() == [-100, -100, -100, 4001, 3]
    examples = [(ids, labels), encode_example([5], [6, 3])]
    again = [encode_example([7, 300, 9], [4001, 3]), encode_example([5], [6, 3])]
    assert sequence_hash(examples) == sequence_hash(again)
    changed = [(ids, labels), encode_example([5], [8, 3])]
    moved = [encode_example([7, 300], [9, 4001, 3]), examples[1]]
    assert len({sequence_hash(examples), sequence_hash(changed), sequence_hash(moved)}) == 3
    # element boundaries count: [[1, 2], [3]] is not [[1], [2, 3]]
    assert sequence_hash([[1, 2], [3]]) != sequence_hash([[1], [2, 3]])
