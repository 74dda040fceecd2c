"""Prompt templates render as configured; a template without its history slot is refused."""

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
    with pytest.raises(ValueError, match=r"must contain the \{history\} slot"):
        PromptTemplate(user="Recommend something.")
    with pytest.raises(ValueError, match=r"history line must contain \{title\}"):
        PromptTemplate(line="- movie")


def test_a_request_ends_the_user_message_on_its_own_line():
    template = PromptTemplate(user="Seen:\n{history}\nNext?", system=None)
    plain = render_prompt(template, ["A (1990)"])
    steered = render_prompt(template, ["A (1990)"], request="The user asks for a comedy.")
    assert steered == plain.replace("Next?", "Next?\nThe user asks for a comedy.")
    assert render_prompt(template, ["A (1990)"], request="") == plain
