"""Steered rows (llm4rec.paradigms.steered) on a tiny IDIOMoE: the parent's exported weights are
restored bit for bit (without a request the steered row ranks exactly as its parent), the request
enters the prompt as text tokens after the instruction (routed to the text expert) and changes the
scores, SID-LLM puts it on its own line before the code history, and a model that cannot read a
request is refused."""

from pathlib import Path

import pandas as pd
import pytest
import torch

from llm4rec.data.atomic import DataError
from llm4rec.data.requests import RequestTemplate
from llm4rec.models import MODELS, POLICY_EXPORTS, ResolvedInput, build_model

from .helpers import tiny_backbone
from .helpers.idiomoe import (
    SAMPLE,
    TITLES,
    WORDS,
    cyclic_split,
    params,
    word_level_tokenizer,  # noqa: F401  (autouse: the fixtures' tokenizer)
)

STEER = {"request": {"template": "{genres}"}, "line": "{request}"}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """An idiomoe fitted 20 steps on the cyclic split (genres: each title's colour), exported."""
    import transformers

    patch = pytest.MonkeyPatch()
    patch.setattr(transformers, "AutoTokenizer", transformers.PreTrainedTokenizerFast)
    folder = tmp_path_factory.mktemp("idiomoe")
    split = cyclic_split([8] * len(TITLES))
    split.items["genres"] = [t.split()[0] for t in TITLES]
    model, tokenizer = tiny_backbone(WORDS, seed=0, init_std=0.1, layers=3)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "sample.txt").write_text(SAMPLE)
    config = params(folder, sft={"steps": 20, "batch_size": 8, "learning_rate": 2e-2})
    rec = build_model("idiomoe", config, seed=0, device="cpu")
    rec.fit(split, folder / "work")
    (folder / "exports").mkdir()
    assert set(rec.export(folder / "exports", split)) == set(POLICY_EXPORTS)
    policy = ResolvedInput({n: folder / "exports" / n for n in POLICY_EXPORTS}, "run idiomoe")
    yield split, policy, rec
    patch.undo()


def _steered(parent, seed=0):
    return build_model(
        "idiomoe_steer", STEER, seed=seed, device="cpu", inputs={"policy": parent[1]}
    )


def test_without_a_request_the_steered_row_is_its_parent(parent, tmp_path):
    split, _, rec = parent
    steered = _steered(parent)
    info = steered.fit(split, tmp_path)
    assert info["trained_with_requests"] is False and info["parameters_trainable"] == 0
    for (name, a), (_, b) in zip(
        rec.model.state_dict().items(), steered.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    histories = {u: list(h) for u, h in split.history("test").items()}
    pd.testing.assert_frame_equal(steered.rank(histories, 5, requests={}), rec.rank(histories, 5))
    assert steered.request_template == RequestTemplate("{genres}")


def test_the_request_is_text_after_the_instruction_and_moves_the_scores(parent, tmp_path):
    split, _, _ = parent
    steered = _steered(parent)
    steered.fit(split, tmp_path)
    model = steered.parent
    history = ["3", "4", "5"]
    ids = model.prompt(history, "blue").ids
    request = model.tokenizer("blue", add_special_tokens=False).input_ids
    n = len(model.prompt_head)
    assert ids == model.prompt_head + model.tokenizer(
        " blue", add_special_tokens=False
    ).input_ids + [model.types.first_item_id + model.index[i] for i in history]
    assert ids[n : n + len(request)] == request
    assert all(i < model.types.first_item_id for i in ids[: n + len(request)])  # text expert
    histories = {u: list(h) for u, h in split.history("test").items()}
    plain = steered.rank(histories, 5, requests={})
    asked = steered.rank(histories, 5, requests={u: "blue" for u in histories})
    assert not plain["score"].equals(asked["score"])  # the model reads it
    for user, group in asked.groupby("user_id"):  # still unseen catalogue items, distinct
        assert not set(group["item_id"]) & set(histories[user])
        assert group["item_id"].is_unique


def test_a_model_that_cannot_read_a_request_is_refused(parent, monkeypatch):
    from llm4rec.paradigms.idiomoe import IdiomoeRecommender

    monkeypatch.setattr(IdiomoeRecommender, "reads_requests", False)
    with pytest.raises(DataError, match="idiomoe_steer: the policy's model .* cannot read"):
        _steered(parent)
    with pytest.raises(ValueError, match="cannot carry a request"):
        parent[2].rank({"u0": ["1"]}, 5, requests={"u0": "blue"})


def test_every_text_reading_llm_has_a_steered_row_and_tiger_none():
    from llm4rec.paradigms.steered import SteeredRecommender

    from .helpers.protocol import protocol_gaps

    assert protocol_gaps(SteeredRecommender) == []
    steered = {
        s.parent: s for s in MODELS.values() if s.factory == "llm4rec.paradigms.steered:build"
    }
    assert set(steered) == {
        "text_prompted",
        "text_prompted_zeroshot",
        "cf_llara",
        "cf_e4srec",
        "idiomoe",
        "idiomoe_requests",
        "sid_llm",
    }
    for name, spec in steered.items():
        assert set(POLICY_EXPORTS) <= set(MODELS[name].exports), name
        assert spec.inputs["policy"].default == {"run": name}
        assert set(spec.inputs) == set(MODELS[name].inputs) | {"policy"}


def test_training_with_requests_puts_the_targets_request_in_a_seeded_share_of_windows(
    parent, tmp_path
):
    """`train_requests` (NEO-style instruction mixing): the chosen windows carry their last item's
    request (its genre here, never its title) after the instruction, and the loss is on the
    position the request describes alone (the last item), never on earlier items the request does
    not describe; without it the examples are the paper's (every item position); the share is
    seeded."""
    import numpy as np

    split, _, rec = parent
    folder = Path(rec.cfg.backbone.name_or_path)
    template = {"template": "{genres}"}

    def examples(**extra):
        model = build_model("idiomoe", params(folder, **extra), seed=0, device="cpu")
        model.model, model.tokenizer = model.load()
        model.prepare(split)
        return model, as_lists(model.training_examples(split, np.random.default_rng(0)))

    def as_lists(windows):
        return [(ids.tolist(), targets.tolist()) for ids, targets in windows]

    plain_model, plain = examples()
    assert plain == as_lists(rec.training_examples(split, np.random.default_rng(0)))
    steered_model, every = examples(
        train_requests={"request": template, "share": 1.0, "line": "{request}"}
    )
    instruction = plain_model.prompt_head
    first_item = plain_model.types.first_item_id
    for (ids, targets), (plain_ids, plain_targets) in zip(every, plain, strict=True):
        last = plain_targets[-1]  # the window's last item, as a catalogue index
        genre = TITLES[int(plain_model.items[last])].split()[0]
        request = plain_model.tokenizer(" " + genre, add_special_tokens=False).input_ids
        assert ids == instruction + request + plain_ids[len(instruction) :]
        assert targets == [-100] * (len(request) + len(plain_targets) - 1) + [last]
        assert all(i < first_item for i in ids[: len(instruction) + len(request)])
    # the plain windows supervise every item position (several in half of them here)
    assert sum(sum(t != -100 for t in targets) > 1 for _, targets in plain) >= len(plain) / 2
    _, half = examples(train_requests={"request": template, "share": 0.5, "line": "{request}"})
    _, again = examples(train_requests={"request": template, "share": 0.5, "line": "{request}"})
    carried = sum(len(a[0]) > len(b[0]) for a, b in zip(half, plain, strict=True))
    assert half == again and 0 < carried < len(plain)


def test_a_parent_trained_with_requests_is_steered_in_its_own_wording(parent, tmp_path):
    from llm4rec.params import ParamsError

    split, _, rec = parent
    folder = Path(rec.cfg.backbone.name_or_path)
    tuned = build_model(
        "idiomoe",
        params(
            folder,
            sft={"steps": 2, "batch_size": 8, "learning_rate": 2e-2},
            train_requests={"request": {"template": "{genres}"}, "line": "wants {request}"},
        ),
        seed=0,
        device="cpu",
    )
    assert tuned.fit(split, tmp_path / "work")["trained_with_requests"] is True
    (tmp_path / "exports").mkdir()
    tuned.export(tmp_path / "exports", split)
    policy = ResolvedInput({n: tmp_path / "exports" / n for n in POLICY_EXPORTS}, "run tuned")
    with pytest.raises(DataError, match="differs from the one its parent trained with"):
        build_model("idiomoe_steer", STEER, seed=0, device="cpu", inputs={"policy": policy})
    steered = build_model(
        "idiomoe_steer",
        STEER | {"line": "wants {request}"},
        seed=0,
        device="cpu",
        inputs={"policy": policy},
    )
    assert steered.fit(split, tmp_path / "steer")["trained_with_requests"] is True
    with pytest.raises(ParamsError, match="train_requests"):
        build_model(
            "sid_tiger",
            {"train_requests": {"share": 0.5}},
            seed=0,
            device="cpu",
            inputs={"codes": ResolvedInput({}, "none")},
        )


def test_the_requests_variant_trains_as_its_steered_row_ranks():
    """`idiomoe_requests` (a grid row) trains with requests worded exactly as the steered rows
    rank with them (the template and line of SteerConfig's defaults and of the grids' steered
    rows), on half its windows; its steered row says it is not zero-shot."""
    from llm4rec.models import check_params
    from llm4rec.paradigms.steered import SteerConfig

    trained = check_params(MODELS["idiomoe_requests"], {}).train_requests
    steer = SteerConfig()
    assert (trained.request, trained.line, trained.share) == (steer.request, steer.line, 0.5)
    assert check_params(MODELS["idiomoe"], {}).train_requests is None
    assert MODELS["idiomoe_requests_steer"].parent == "idiomoe_requests"
    assert "after training with requests" in MODELS["idiomoe_requests_steer"].description
    assert "zero-shot" in MODELS["idiomoe_steer"].description
