"""Text-prompted rows (llm4rec.paradigms.text_prompted): a user's history as titles in a prompt, a
fine-tuned (or zero-shot) causal LM, catalogue-constrained decoding; and the rows over its
weights."""

from __future__ import annotations

from llm4rec.models.spec import (
    POLICY_EXPORTS,
    Paradigm,
    exact_ranking,
    grpo_stage,
    llm_row,
    steered,
    variant,
)

PARADIGM = Paradigm("text_prompted", "Text-prompted", "#DD8452", rank=1)

ROWS = [
    llm_row(
        "text_prompted",
        "text_prompted",
        "TextPromptedConfig",
        "text_prompted",
        "history as titles -> fine-tuned causal LM (LoRA) -> catalogue-constrained beam search",
        "Text-prompted (LoRA)",
        exports=POLICY_EXPORTS,
    ),
    variant(
        "text_prompted_zeroshot",
        "text_prompted",
        "the same prompt and constrained decoding, no fine-tuning",
        "Text-prompted (zero-shot)",
        overrides={"zero_shot": True},
        not_applicable={"lora": None, "sft": {"steps": 0}},
    ),
    grpo_stage("text_prompted_grpo", "text_prompted", "Text-prompted (LoRA) + GRPO"),
    steered("text_prompted_steer", "text_prompted", "Text-prompted (LoRA) + request"),
    steered("text_prompted_zeroshot_steer", "text_prompted_zeroshot", "Zero-shot + request"),
    exact_ranking("text_prompted_exact", "text_prompted", "Text-prompted (LoRA), exact ranking"),
]
