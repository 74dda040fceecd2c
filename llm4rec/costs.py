"""The cost figures of a run, named once: what run.json's `cost` holds, what MLflow logs, and
which columns the summary and the cost table show, in this order.

A row may add its own figures (e.g. text perplexity before and after training) in its
registry entry (`ModelSpec.costs`, reported by `fit` under `costs`); they flow to run.json,
MLflow, the summary and the cost table like these (`llm4rec.models.registered_costs`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    key: str
    title: str  # cost-table column
    always: bool = True  # every run reports it; False: only runs that count it (LLM tokens)
    in_table: bool = True
    in_summary: bool = True
    decimals: int = 1  # printed with (summary, cost table); counts: whole numbers (report.tables)


COSTS = (
    Cost("parameters_total", "Params"),
    Cost("parameters_trainable", "Trainable"),
    Cost("train_time_s", "Train (s)"),
    Cost("inference_ms_per_user", "Infer (ms/user)", decimals=2),
    Cost("inference_time_test_s", "Infer test (s)", in_table=False, in_summary=False),
    Cost("peak_memory_mb", "Peak mem (MiB)"),
    # LLM runs: tokens through the model in training and per test user at inference, and the share
    # of beam slots history items would have taken had constrained decoding not scored them out
    Cost("train_tokens", "Train tok.", always=False),
    Cost("inference_tokens_per_user", "Tok./user", always=False),
    Cost("history_beam_share", "Hist. beams (%)", always=False, in_summary=False),
)


# the harness's optional figures: LLM token counts
TOKEN_COST_KEYS = tuple(c.key for c in COSTS if not c.always)


def token_costs(fit_info: dict, test_cost: dict, n_test: int) -> dict[str, float]:
    """The optional costs a run reports: training tokens (from fit), tokens per test user and the
    history-beam share (from the model's inference_cost of the test phase)."""
    out: dict[str, float] = {}
    if "train_tokens" in fit_info:
        out["train_tokens"] = int(fit_info["train_tokens"])
    if "tokens" in test_cost:
        out["inference_tokens_per_user"] = test_cost["tokens"] / max(n_test, 1)
    if "history_beam_share" in test_cost:
        out["history_beam_share"] = test_cost["history_beam_share"]
    return out


# the LLM paradigms' text retention (llm4rec.llm.retention), declared in their registry entries
TEXT_RETENTION_COSTS = (
    Cost("text_ppl_before", "Text ppl before", always=False, decimals=2),
    Cost("text_ppl_after", "Text ppl after", always=False, decimals=2),
)

# the semantic-ID paradigm's item tokenizer (llm4rec.paradigms.semantic_id.codes), from its
# artifact's stats
SEMANTIC_ID_COSTS = (
    Cost("sid_collision_pct", "SID collisions (%)", always=False, in_summary=False),
    Cost("sid_codes_used_pct", "Codes used (%)", always=False, in_summary=False),
    Cost("sid_code_perplexity", "Code ppl", always=False, in_summary=False),
)

# an exact-ranking row (llm4rec.paradigms.exact): its parent's beam against the exact ranking on the
# row's test users
BEAM_AGREEMENT_COSTS = (
    Cost("beam_overlap_at_k", "Beam-exact overlap@K", always=False, decimals=3),
    Cost("beam_miss_pct", "Beam misses (%)", always=False),
)

# TIGER's cold-start retrieval (llm4rec.paradigms.semantic_id.cold_start): unseen items it inserted
# into each test user's top-K
COLD_START_COSTS = (
    Cost("coldstart_inserted_per_user", "New items inserted / user", always=False, decimals=2),
)
# the figures rows declare (ModelSpec.costs), in the cost table's column order after COSTS
ROW_COSTS = (
    *TEXT_RETENTION_COSTS,
    *SEMANTIC_ID_COSTS,
    *COLD_START_COSTS,
    *BEAM_AGREEMENT_COSTS,
)
