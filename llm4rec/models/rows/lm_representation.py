"""LM-representation rows (llm4rec.paradigms.alpharec): frozen language-model embeddings of item
text mapped into a collaborative space (AlphaRec), its probes, floors and transfer."""

from __future__ import annotations

from llm4rec.models.spec import InputSlot, ModelSpec, Paradigm, item_text_input, variant

PARADIGM = Paradigm("lm_representation", "LM representations", "#937860", rank=5)

LINEAR_PROBE = {"mapping": "linear", "graph_layers": 0}  # AlphaRec's RQ1 probe

ROWS = [
    ModelSpec(
        "alpharec",
        "lm_representation",
        "llm4rec.paradigms.alpharec:build",
        "frozen LM embeddings of item text -> shared MLP -> LightGCN propagation -> InfoNCE; "
        "users are the mean of their history (AlphaRec)",
        config="llm4rec.paradigms.alpharec:AlphaRecConfig",
        display="AlphaRec",
        inputs=item_text_input(),
        exports=("alpharec.pt", "alpharec.json"),
    ),
    variant(
        "alpharec_zeroshot",
        "alpharec",
        "AlphaRec trained on another dataset (inputs.source names it), ranking this one's "
        "users "
        "with no training here: its map over this dataset's item text, this training graph "
        "(AlphaRec's zero-shot transfer, Table 4)",
        "AlphaRec (zero-shot transfer)",
        not_applicable={"epochs": 0},
        # the floors it must beat: the same architecture and graph untrained, and popularity
        references=("alpharec_untrained", "mostpop"),
        inputs={
            **item_text_input(),
            "source": InputSlot(
                ("alpharec.pt", "alpharec.json"),
                {"run": "alpharec"},
                "a finished AlphaRec run on another dataset: its trained map and encoder",
                across_datasets="required",
            ),
        },
    ),
    variant(
        "alpharec_untrained",
        "alpharec",
        "AlphaRec at its seeded random initialisation, never trained: its MLP and LightGCN "
        "propagation over this training graph, the floor a transferred map must beat (the "
        "zero-shot row's comparison)",
        "AlphaRec, untrained",
        not_applicable={"epochs": 0},
    ),
    variant(
        "alpharec_linear",
        "alpharec",
        "AlphaRec's linear-mapping probe (its RQ1): one bias-free linear map of the LM "
        "embeddings, no graph",
        "Linear map of LM embeddings",
        overrides=LINEAR_PROBE,
    ),
    variant(
        "alpharec_linear_untrained",
        "alpharec_linear",
        "the linear-mapping probe at its seeded random initialisation, never trained: the "
        "floor a transferred map must beat",
        "Linear map, untrained",
        not_applicable={"epochs": 0},
    ),
    variant(
        "alpharec_linear_llm",
        "alpharec_linear",
        "the linear-mapping probe over a backbone LLM's mean-pooled hidden states (default "
        "SmolLM2-135M; the grid may name another) instead of a sentence encoder",
        "Linear map of LLM states",
        inputs=item_text_input({"kind": "backbone", "model": "smollm2-135m-instruct"}),
    ),
    variant(
        "alpharec_intent",
        "alpharec",
        "AlphaRec ranking with a user intention (its Table 5): the user's vector blended with "
        "the mapped embedding of a request written from the target's genres and decade",
        "AlphaRec + intention",
        defaults={"intention": {"enabled": True}},
        reads_requests=True,
    ),
]
