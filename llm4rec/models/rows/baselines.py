"""The classical baselines: RecBole's (MostPop, BPR, LightGCN, SASRec's prefix training), SASRec as
its paper trains it (baselines.sasrec), and a k-NN over another run's item embeddings."""

from __future__ import annotations

from llm4rec.models.spec import SCORE_EXPORTS, InputSlot, ModelSpec, Paradigm

PARADIGM = Paradigm("baseline", "Baselines", "#4C72B0", rank=0)

RECBOLE_FACTORY, RECBOLE_CONFIG = (
    "baselines.recbole_models:build",
    "baselines.recbole_models:recbole_params",
)
RECBOLE_HYPERPARAMETERS = "baselines.recbole_models:recbole_hyperparameters"
# a CF baseline's exports: what Emb-kNN, the CF-injected rows and RTA's gating consume
CF_EXPORTS = ("item_embeddings.npy", "user_embeddings.npy", "user_ids.txt", *SCORE_EXPORTS)

ROWS = [
    ModelSpec(
        "mostpop",
        "baseline",
        RECBOLE_FACTORY,
        "RecBole Pop: training popularity (sanity floor)",
        config=RECBOLE_CONFIG,
        display="MostPop",
        exports=SCORE_EXPORTS,
        hyperparameters=RECBOLE_HYPERPARAMETERS,
    ),
    ModelSpec(
        "bpr",
        "baseline",
        RECBOLE_FACTORY,
        "RecBole BPR: matrix factorisation with BPR loss",
        config=RECBOLE_CONFIG,
        display="BPR",
        exports=CF_EXPORTS,
        hyperparameters=RECBOLE_HYPERPARAMETERS,
    ),
    ModelSpec(
        "lightgcn",
        "baseline",
        RECBOLE_FACTORY,
        "RecBole LightGCN: graph convolution CF",
        config=RECBOLE_CONFIG,
        display="LightGCN",
        exports=CF_EXPORTS,
        hyperparameters=RECBOLE_HYPERPARAMETERS,
    ),
    ModelSpec(
        "sasrec",
        "baseline",
        "baselines.sasrec:build",
        "SASRec as its paper trains it: RecBole's network, each user's sequence once an epoch, "
        "binary cross-entropy against a sampled negative at every position (Kang & McAuley)",
        config="baselines.sasrec:SasrecConfig",
        display="SASRec",
        exports=("item_embeddings.npy", *SCORE_EXPORTS),
    ),
    ModelSpec(
        "sasrec_ce",
        "baseline",
        "baselines.sasrec:build",
        "SASRec+: the same network and training with full softmax cross-entropy over the "
        "catalogue at every position (Klenitskiy & Vasilev, RecSys 2023)",
        config="baselines.sasrec:SasrecCeConfig",
        display="SASRec+ (CE)",
        exports=("item_embeddings.npy", *SCORE_EXPORTS),
    ),
    ModelSpec(
        "sasrec_recbole",
        "baseline",
        RECBOLE_FACTORY,
        "RecBole's SASRec training: every prefix of every user's sequence one example, the "
        "loss at its end (RecBole 1.2.1)",
        config=RECBOLE_CONFIG,
        display="SASRec (RecBole prefixes)",
        exports=("item_embeddings.npy", *SCORE_EXPORTS),
        hyperparameters=RECBOLE_HYPERPARAMETERS,
        parent="sasrec",
    ),
    ModelSpec(
        "emb_knn",
        "baseline",
        "baselines.embedding_knn:build",
        "cosine kNN over item embeddings consumed from another run (default: BPR) or an artifact",
        config="baselines.embedding_knn:EmbeddingKnnConfig",
        display="Emb-kNN",
        inputs={
            "embeddings": InputSlot(
                ("item_embeddings.npy",),
                {"run": "bpr"},
                "item embeddings, rows in items.parquet order",
            )
        },
    ),
]
