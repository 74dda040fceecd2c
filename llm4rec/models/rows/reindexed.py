"""Reindexed-LLM rows (llm4rec.paradigms.rta): each item one new token of a frozen LLM, then adapted
to the platform (Reindex-Then-Adapt)."""

from __future__ import annotations

from llm4rec.models.spec import (
    SCORE_EXPORTS,
    InputSlot,
    ModelSpec,
    Paradigm,
    llm_states_input,
    variant,
)

PARADIGM = Paradigm("reindexed", "Reindexed LLM (one token per item)", "#DA8BC3", rank=6)

ROWS = [
    ModelSpec(
        "rta_reindex",
        "reindexed",
        "llm4rec.paradigms.rta:build",
        "each item one new token of a frozen LLM (an aggregator over its title's token "
        "embeddings, contrastive loss); one forward and a softmax over item tokens "
        "(Reindex-Then-Adapt, reindex step)",
        config="llm4rec.paradigms.rta:RtaConfig",
        display="RTA (reindex)",
        inputs=llm_states_input(),
        # the paper's comparison for an unadapted reindexed LLM: popularity and the LLM's
        # own zero-shot recommendations
        references=("mostpop", "text_prompted_zeroshot"),
    ),
    variant(
        "rta_bias",
        "rta_reindex",
        "the reindexed LLM adapted by a bias term: softmax(g + b), b trained on the "
        "platform's training data (RTA, bias adjustment)",
        "RTA (reindex + bias)",
        overrides={"adapt": {"kind": "bias"}},
        references=("mostpop", "text_prompted_zeroshot"),
    ),
    variant(
        "rta_recsys",
        "rta_reindex",
        "the reindexed LLM gated with a finished baseline's scores (default SASRec): "
        "a log p_LLM + (1 - a) log p_RecSys, a chosen on validation (RTA, RecSys gating)",
        "RTA (reindex + RecSys gating)",
        overrides={"adapt": {"kind": "gating"}},
        # the paper's claim: the gate beats both of its parts
        references=("input:recsys",),
        inputs=llm_states_input(
            {
                "recsys": InputSlot(
                    SCORE_EXPORTS,
                    {"run": "sasrec"},
                    "a finished baseline run's full-catalogue scores per evaluated phase",
                )
            }
        ),
    ),
    variant(
        "rta_reindex_steer",
        "rta_reindex",
        "rta_reindex (trained as it: the same aggregator) ranking with each user's request in "
        "the frozen LLM's prompt after the history titles (a forward at ranking time)",
        "RTA (reindex) + request",
        # its config adds the request's wording to rta_reindex's (the same factory builds it)
        config="llm4rec.paradigms.rta:SteeredRtaConfig",
        reads_requests=True,
    ),
]
