"""CF-injected rows (llm4rec.paradigms.cf_injected): a CF run's item embeddings projected into the
LLM as soft tokens (LLaRA, E4SRec); and the rows over their weights."""

from __future__ import annotations

from llm4rec.models.spec import (
    POLICY_EXPORTS,
    Paradigm,
    cf_source_input,
    exact_ranking,
    llm_row,
    steered,
    variant,
)

PARADIGM = Paradigm("cf_injected", "CF-injected", "#55A868", rank=2)

ROWS = [
    llm_row(
        "cf_llara",
        "cf_injected",
        "CfLlaraConfig",
        "cf_injected",
        "history as titles, each followed by its projected CF embedding (a soft token) -> "
        "LoRA -> constrained title decoding (LLaRA)",
        "LLaRA (CF soft tokens)",
        cf_source_input(),
        exports=POLICY_EXPORTS,
    ),
    variant(
        "cf_llara_permuted",
        "cf_llara",
        "cf_llara with every soft token carrying another item's CF embedding (fixed "
        "derangement): does the LLM use it?",
        "LLaRA (permuted CF)",
        overrides={"cf": {"permuted": True}},
    ),
    llm_row(
        "cf_e4srec",
        "cf_injected",
        "CfE4SRecConfig",
        "cf_injected",
        "history as projected CF embeddings only -> LoRA -> an output layer over all items, "
        "one forward per user (E4SRec)",
        "E4SRec (CF soft tokens)",
        cf_source_input(),
        exports=POLICY_EXPORTS,
    ),
    variant(
        "cf_e4srec_allpos",
        "cf_e4srec",
        "cf_e4srec with the harness's training: next-item loss at every history position (no "
        "answer prefix) and a log-popularity item bias over a zero-initialised output layer",
        "E4SRec (all positions, pop. prior)",
        overrides={
            "loss_positions": "all",
            "prompt": {"answer_prefix": ""},
            "item_bias": "log_popularity",
            "head_init": "zero",
        },
    ),
    variant(
        "cf_e4srec_permuted",
        "cf_e4srec",
        "cf_e4srec with every soft token carrying another item's CF embedding (fixed derangement)",
        "E4SRec (permuted CF)",
        overrides={"cf": {"permuted": True}},
    ),
    steered("cf_llara_steer", "cf_llara", "LLaRA + request"),
    steered("cf_e4srec_steer", "cf_e4srec", "E4SRec + request"),
    exact_ranking("cf_llara_exact", "cf_llara", "LLaRA, exact ranking"),
]
