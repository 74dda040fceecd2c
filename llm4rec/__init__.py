"""llm4rec-bench: LLM-based recommenders against strong classical baselines, on one protocol.

Data flows one way through the package, one folder per stage of the method:

    data/        load a dataset (RecBole atomic files and converters), preprocess, split
    models/      the Recommender protocol every model implements, and the model registry
    evaluation/  per-user ranking metrics over the full catalogue minus the user's history
    config.py    the one grid loader (defaults: schema.py, from llm4rec/schema.yaml)
    layout.py    the results folder's file and folder names
    runner.py    one grid cell: prepare -> train + rank -> evaluate
    tracking.py  the only place that talks to MLflow
    report/      summary tables
    cli.py       the `llm4rec` command; each subcommand is one Snakemake rule's job

Baselines (RecBole adapters) live in the top-level `baselines` package.
"""

__version__ = "0.1.0"
