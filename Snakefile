"""llm4rec-bench: the grid (datasets x models x seeds) and its stages.

    prepare (per dataset) -> [artifacts, e.g. semantic_ids] -> train + rank -> evaluate -> track (MLflow)
                                                            -> summary, compare -> report

    snakemake --cores 2 --resources mlflow=1                                   # the main job, benchmarks/default.yaml
    snakemake ablations --cores 2 --resources mlflow=1                         # its ablation variants, reusing the parents
    snakemake --cores 8 --resources mlflow=1 gpu=1 --config grid=benchmarks/paper.yaml
    snakemake -n                                                               # show the DAG

Two targets: `all` (default: the baselines and each system, reports/) and `ablations` (every registry
variant against its finished parent, reports/ablations/). Every stage is one `llm4rec` subcommand; the
grid config is validated before anything runs. Rules by stage: rules/data.smk (prepare, downloads,
artifacts), rules/train.smk (train, evaluate, track), rules/report.smk (summary, compare, report);
rules/common.smk loads the grid and names every path.
"""


include: "rules/common.smk"


rule all:
    """The main job: every non-variant run, tracked, with the summary and the main report."""
    input:
        run_files("main", layout.MLFLOW_JSON),
        source_run_files("main", layout.MLFLOW_JSON),
        f"{GRID.reports_dir}/summary.md",
        str(GRID.report_marker("main")),
    default_target: True


rule ablations:
    """The ablation variants (the main job's runs of their parents are reused) and their report."""
    input:
        run_files("ablations", layout.MLFLOW_JSON),
        source_run_files("ablations", layout.MLFLOW_JSON),
        str(GRID.report_marker("ablations")),


include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/report.smk"


onsuccess:
    print(
        f"[llm4rec] grid '{GRID.name}' done. Summary: {GRID.reports_dir}/summary.md; tables, slices and "
        f"figures: {GRID.reports_dir}/ (ablations: {GRID.report_dir('ablations')}/); "
        f"runs: {GRID.grid_dir}/runs/<dataset>/<model>/seed<N>/ (mlflow.json holds each MLflow run id); "
        f"MLflow UI: mlflow ui --backend-store-uri {GRID.tracking_uri()}"
    )
