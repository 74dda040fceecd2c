"""Semantic-ID rows (llm4rec.paradigms.semantic_id): residual-quantized codes over item-text
embeddings decoded by trie-constrained beam search (TIGER's T5, an LLM's new tokens); and the rows
over their weights."""

from __future__ import annotations

from llm4rec.costs import COLD_START_COSTS, SEMANTIC_ID_COSTS
from llm4rec.models.spec import (
    POLICY_EXPORTS,
    Paradigm,
    StageRow,
    exact_ranking,
    grpo_stage,
    llm_row,
    semantic_ids_input,
    steered,
    variant,
)

PARADIGM = Paradigm("semantic_id", "Semantic-ID", "#C44E52", rank=3)

ROWS = [
    llm_row(
        "sid_tiger",
        "semantic_id.tiger",
        "TigerConfig",
        "semantic_id",
        "semantic IDs (RQ-VAE over item-text embeddings) -> T5 from scratch -> "
        "trie-constrained beam search (TIGER)",
        "TIGER (semantic IDs)",
        semantic_ids_input(),
        SEMANTIC_ID_COSTS,
        reads_text=False,
        exports=POLICY_EXPORTS,
    ),
    variant(
        "sid_random",
        "sid_tiger",
        "sid_tiger on random code tuples of the same shape (what semantic structure buys)",
        "TIGER (random IDs)",
        inputs=semantic_ids_input("random"),
    ),
    llm_row(
        "sid_llm",
        "semantic_id.llm",
        "SidLlmConfig",
        "semantic_id",
        "semantic IDs as new tokens of a pretrained LLM (LoRA + code embeddings) -> "
        "trie-constrained beam search",
        "SID-LLM (LoRA)",
        semantic_ids_input(),
        SEMANTIC_ID_COSTS,
        exports=POLICY_EXPORTS,
    ),
    grpo_stage("sid_tiger_grpo", "sid_tiger", "TIGER + GRPO"),
    grpo_stage("sid_llm_grpo", "sid_llm", "SID-LLM (LoRA) + GRPO"),
    steered("sid_llm_steer", "sid_llm", "SID-LLM (LoRA) + request"),
    StageRow(
        "sid_tiger_coldstart",
        "sid_tiger",
        "TIGER + cold-start retrieval",
        "llm4rec.paradigms.semantic_id.cold_start:build",
        "llm4rec.paradigms.semantic_id.cold_start:ColdStartConfig",
        "sid_tiger's trained weights with TIGER's cold-start retrieval: after each decoded "
        "item, the unseen items sharing its quantized codes, at most epsilon of every top-p",
        "the model whose decoded items retrieve the unseen ones",
        COLD_START_COSTS,
    ),
    exact_ranking("sid_tiger_exact", "sid_tiger", "TIGER, exact ranking"),
    exact_ranking("sid_llm_exact", "sid_llm", "SID-LLM (LoRA), exact ranking"),
]
