"""MoE-expert rows (llm4rec.paradigms.idiomoe): item IDs as new tokens, each block's FFN split into
a text expert and an item expert routed by token type (IDIOMoE); and the rows over its weights."""

from __future__ import annotations

from llm4rec.models.spec import POLICY_EXPORTS, Paradigm, llm_row, steered, variant

PARADIGM = Paradigm("moe_expert", "MoE-expert", "#8172B3", rank=4)

ROWS = [
    llm_row(
        "idiomoe",
        "idiomoe",
        "IdiomoeConfig",
        "moe_expert",
        "item IDs as new tokens; FFN split into text and item experts routed by token type "
        "(IDIOMoE)",
        "IDIOMoE",
        exports=POLICY_EXPORTS,
    ),
    variant(
        "idiomoe_popprior",
        "idiomoe",
        "IDIOMoE with untied item output vectors starting at zero over a learned "
        "log-popularity item bias",
        "IDIOMoE (pop. prior)",
        overrides={"item_head": "untied", "item_bias": "log_popularity"},
    ),
    variant(
        "idiomoe_learned_router",
        "idiomoe",
        "IDIOMoE with a learned per-token gate between the experts instead of token-type routing",
        "IDIOMoE (learned router)",
        overrides={"routing": "learned"},
    ),
    variant(
        "idiomoe_requests",
        "idiomoe",
        "IDIOMoE trained with requests (NEO's instruction mixing): a seeded half of its "
        "training windows carry their last item's request (genres and decade, never the "
        "title) after the instruction, as text tokens; ranks without one (its steered row "
        "with one)",
        "IDIOMoE (trained with requests)",
        defaults={"train_requests": {"share": 0.5}},
    ),
    variant(
        "idiomoe_entangled",
        "idiomoe",
        "the same item tokens and training, no expert split: the shared FFN tuned with LoRA",
        "Item tokens, entangled FFN",
        overrides={"expert_layers": "none"},
        defaults={
            "lora": {
                "rank": 16,
                "alpha": 32,
                "dropout": 0.0,
                "target_modules": ["gate_proj", "up_proj", "down_proj"],
            }
        },
    ),
    steered("idiomoe_steer", "idiomoe", "IDIOMoE + request"),
    steered(
        "idiomoe_requests_steer",
        "idiomoe_requests",
        "IDIOMoE (trained with requests) + request",
        trained=True,
    ),
]
