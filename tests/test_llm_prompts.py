"""Prompt templates render as configured; a template without its history slot is refused; every
LLM row words its prompt in the one template, and a row without chat turns splits it around the
history and its item."""

import pytest

from llm4rec.llm.prompts import PromptTemplate, render_prompt

from .helpers import tiny_backbone


def test_plain_lm_prompt_renders_history_lines_in_order():
    template = PromptTemplate(user="Seen:\n{history}", system=None, line="{index}. {title}")
    _, tokenizer = tiny_backbone(["a"])  # no chat template
    text = render_prompt(template, ["Heat (1995)", "Alien (1979)"], tokenizer)
    assert text == "Seen:\n1. Heat (1995)\n2. Alien (1979)\n\nNext:"


def test_chat_template_is_applied_when_present():
    class ChatTokenizer:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert not tokenize and add_generation_prompt
            return "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"

    template = PromptTemplate(user="H:\n{history}", system="S", answer_prefix="")
    assert (
        render_prompt(template, ["Heat (1995)"], ChatTokenizer())
        == "<|system|>S<|user|>H:\nHeat (1995)<|assistant|>"
    )


def test_template_without_history_slot_is_refused():
    with pytest.raises(ValueError, match=r"must contain the \{history\} slot once"):
        PromptTemplate(user="Recommend something.")
    with pytest.raises(ValueError, match=r"must contain the \{history\} slot once"):
        PromptTemplate(user="{history} then {history}")
    with pytest.raises(ValueError, match=r"history line must contain \{title\} or \{item\}"):
        PromptTemplate(line="- movie")
    with pytest.raises(ValueError, match=r"history line must contain \{title\} or \{item\}"):
        PromptTemplate(line="{title} {rating}")
    # rows without chat turns cut the text at its slots and never format it: plain slots only
    for user in ("{history!r}", "{history:>9}", "{{ {history}"):
        with pytest.raises(ValueError, match=r"has a brace that is not a plain slot"):
            PromptTemplate(user=user)


def test_a_request_ends_the_user_message_on_its_own_line():
    template = PromptTemplate(user="Seen:\n{history}\nNext?", system=None)
    plain = render_prompt(template, ["A (1990)"])
    steered = render_prompt(template, ["A (1990)"], request="The user asks for a comedy.")
    assert steered == plain.replace("Next?", "Next?\nThe user asks for a comedy.")
    assert render_prompt(template, ["A (1990)"], request="") == plain


def test_a_row_without_chat_turns_splits_the_template_around_the_history_and_the_item():
    template = PromptTemplate(
        user="Seen:\n{history}", system=None, line="{title} {item}\n", answer_prefix="Next:"
    )
    assert template.around_history() == ("Seen:\n", "Next:")
    assert template.around("item") == ("{title} ", "\n")
    template.check(("item", "title"), chat=False)
    with pytest.raises(ValueError, match=r"prompt.line must be '\{item\}' alone"):
        template.check(("item", "title"), chat=False, bare=True)
    with pytest.raises(ValueError, match=r"prompt.line must hold \{item\} once and no slot but"):
        template.check(("item",), chat=False)
    with pytest.raises(ValueError, match=r"prompt.system must be null"):
        PromptTemplate(user="{history}", line="{item}").check(("item",), chat=False)


def test_each_row_refuses_at_validation_a_prompt_it_cannot_write():
    from llm4rec.models import ARTIFACTS, MODELS, check_params
    from llm4rec.params import ParamsError

    refused = {
        # SID-LLM fills the title before the codes only
        "sid_llm": (
            {"line": "{item} ({title})\n"},
            r"prompt.line must put \{title\} before \{item\}",
        ),
        "cf_e4srec": ({"line": "{item}, "}, r"prompt.line must be '\{item\}' alone"),
        "idiomoe": (
            {"answer_prefix": "Next:"},
            r"prompt: the user message must end with \{history\}",
        ),
        "text_prompted": ({"line": "{item}"}, r"prompt.line must hold \{title\} once"),
        "cf_llara": ({"line": "{title} {title}"}, r"prompt.line must hold \{title\} once"),
    }
    for name, (prompt, message) in refused.items():
        with pytest.raises(ParamsError, match=rf"{name}: params: {message}"):
            check_params(MODELS[name], {"prompt": prompt})
    states = ARTIFACTS["llm_states"]  # RTA's frozen LLM reads q at each line's end
    with pytest.raises(ParamsError, match=r"prompt.line must be \{title\} then a non-empty sep"):
        check_params(states, {"prompt": {"line": "{title}"}})
    with pytest.raises(ParamsError, match=r"the user message must end with \{history\}"):
        check_params(states, {"prompt": {"answer_prefix": "Next:"}})
    with pytest.raises(ParamsError, match=r"parameter 'prompt' must be a mapping of PromptTemp"):
        check_params(MODELS["sid_llm"], {"prompt": None})
    with pytest.raises(ParamsError, match=r"parameter 'instruction' is now prompt.user"):
        check_params(MODELS["idiomoe"], {"instruction": "Movies watched:"})


def test_every_llm_row_words_its_prompt_in_one_template():
    """One shape: a row's config (or the artifact config it reads) holds its wording in `prompt`,
    a PromptTemplate, and no row has wording keys of its own; each row's default parses."""
    import dataclasses
    import typing

    from llm4rec.models import ARTIFACTS, MODELS, check_params, import_object

    wording = {"instruction", "response", "answer_prefix", "header", "separator"}
    prompted = set()
    for spec in [*MODELS.values(), *ARTIFACTS.values()]:
        config = import_object(spec.config) if spec.config else None
        if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
            continue
        fields = {f.name for f in dataclasses.fields(config)}
        assert not fields & wording, (spec.name, fields & wording)
        if "prompt" in fields:
            assert typing.get_type_hints(config)["prompt"] is PromptTemplate, spec.name
            assert isinstance(check_params(spec, {}).prompt, PromptTemplate), spec.name
            prompted.add(config.__name__)
    assert prompted >= {
        "TextPromptedConfig",
        "CfLlaraConfig",
        "CfE4SRecConfig",
        "IdiomoeConfig",
        "SidLlmConfig",
        "StatesConfig",
    }
