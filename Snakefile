"""llm4rec-bench: the grid (datasets x models x seeds) and its stages.

    prepare (per dataset) -> [artifacts, e.g. semantic_ids] -> train + rank -> evaluate -> track (MLflow) -> summary
                                             compare -> report

    snakemake --cores 2 --resources mlflow=1                          # benchmarks/default.yaml
    snakemake --cores 2 --resources mlflow=1 --configfile benchmarks/paper.yaml
    snakemake -n                                                      # show the DAG

Every stage is one `llm4rec` subcommand; the grid config is validated before anything runs.
"""

import sys
from pathlib import Path

from llm4rec.config import ConfigError, load_grid
from llm4rec.data.sources import AMAZON_2018_CATEGORIES, amazon2018_files
from llm4rec.io import stable_hash
from llm4rec.models import ARTIFACTS, MODELS
from llm4rec.report.build import report_files

_cli_configs = list(workflow.overwrite_configfiles or [])
CONFIG_FILE = str(_cli_configs[-1]) if _cli_configs else "benchmarks/default.yaml"
try:
    GRID = load_grid(CONFIG_FILE)
except ConfigError as err:
    sys.exit(f"error: {err}")

PY = sys.executable
LLM4REC = f"{PY} -m llm4rec.cli"
DATA = f"{GRID.grid_dir}/data/{{dataset}}"
RUN = f"{GRID.grid_dir}/runs/{{dataset}}/{{model}}/seed{{seed}}"
LOGS = f"{GRID.grid_dir}/logs"
RUN_FILES = ["rankings_valid.parquet", "rankings_test.parquet", "run.json"]

wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    model=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",
    key=r"[0-9a-f]+",


# On a cluster, the cheap rules run where Snakemake runs (seconds each; 190 `track` jobs queued one by one on
# SLURM would wait longer than they run), downloads too (compute nodes often have no internet); prepare,
# artifacts and train are submitted.
localrules: all, download_amazon2018, evaluate, track, summary, compare, report


def cell_runs():
    return [dict(dataset=d, model=m, seed=s) for d, m, s in GRID.runs()]


def model_resource(name, default):
    def get(wildcards):
        entry = GRID.model_entry(wildcards.model).get("resources", {})
        if name == "gpu":
            return entry.get("gpu", 1 if GRID.device.startswith("cuda") or MODELS[wildcards.model].needs_gpu else 0)
        return entry.get(name, default)
    return get


def raw_inputs(wildcards):
    source = GRID.dataset_config(wildcards.dataset)["source"]
    if source in AMAZON_2018_CATEGORIES:
        files = amazon2018_files(AMAZON_2018_CATEGORIES[source])
        return [f"{GRID.results_dir}/raw/{source}/{name}" for name in files]
    return []


def train_inputs(wildcards):
    """The split, plus what the model consumes (ModelSpec.inputs): another run's exports folder
    or an artifact's artifact.json. These edges show in `snakemake -n`; a changed upstream reruns
    the consumer (its config hash is part of the consumer's run hash)."""
    sources = GRID.input_sources(wildcards.dataset, wildcards.model, int(wildcards.seed))
    return [f"{GRID.grid_dir}/data/{wildcards.dataset}/split.json"] + [str(s.marker) for s in sources.values()]


REPORTS = GRID.reports_dir
REPORT_FILES = [str(path) for path in report_files(REPORTS, GRID.report_options())]


def run_folders():
    return [f"{GRID.grid_dir}/runs/{r['dataset']}/{r['model']}/seed{r['seed']}" for r in cell_runs()]


rule all:
    input:
        [f"{folder}/mlflow.json" for folder in run_folders()],
        f"{REPORTS}/summary.md",
        f"{GRID.grid_dir}/report_mlflow.json",
    default_target: True


rule download_amazon2018:
    """Raw Amazon Reviews 2018 files (5-core reviews + metadata); needs internet access."""
    output:
        f"{GRID.results_dir}/raw/{{source}}/{{filename}}.json.gz",
    wildcard_constraints:
        source="|".join(AMAZON_2018_CATEGORIES),
    shell:
        "{LLM4REC} download {wildcards.source} --raw-dir {GRID.results_dir}/raw"


rule prepare:
    """Load, preprocess (threshold, dedup, k-core) and split one dataset, once for all models."""
    input:
        raw_inputs,
    output:
        split=f"{DATA}/split.json",
        interactions=f"{DATA}/interactions.parquet",
        catalogue=f"{DATA}/items.parquet",
    params:
        dataset_hash=lambda w: stable_hash(GRID.dataset_config(w.dataset)),
    log:
        f"{LOGS}/prepare/{{dataset}}.log",
    shell:
        "{LLM4REC} prepare --config {CONFIG_FILE} --dataset {wildcards.dataset} 2>&1 | tee {log}"


# One rule per registered artifact (llm4rec.models.ARTIFACTS), named after it (e.g. `semantic_ids`,
# `item_text_lsa`): built once per dataset and configuration (and seed, where per-seed); the runs
# that consume it depend on its artifact.json, so a changed configuration rebuilds it and reruns them.
for _artifact in ARTIFACTS.values():
    rule:
        name: _artifact.name
        input:
            f"{DATA}/split.json",
        output:
            f"{GRID.grid_dir}/artifacts/{{dataset}}/{_artifact.name}/{{key}}/artifact.json",
        params:
            artifact=_artifact.name,
        log:
            f"{LOGS}/artifact/{{dataset}}/{_artifact.name}/{{key}}.log",
        shell:
            "{LLM4REC} artifact --config {CONFIG_FILE} --dataset {wildcards.dataset} --artifact {params.artifact} "
            "--key {wildcards.key} 2>&1 | tee {log}"


rule train:
    """Fit one model on the split (and what it consumes); rank top-K for validation and test users; export."""
    input:
        train_inputs,
    output:
        [f"{RUN}/{name}" for name in RUN_FILES],
        directory(f"{RUN}/exports"),
    params:
        run_hash=lambda w: GRID.run_hash(w.dataset, w.model, int(w.seed)),
    threads: lambda w: GRID.model_threads(w.model)
    resources:
        gpu=model_resource("gpu", 0),
        mem_mb=model_resource("mem_mb", 4000),
        runtime=model_resource("runtime", 120),
    log:
        f"{LOGS}/train/{{dataset}}/{{model}}/seed{{seed}}.log",
    shell:
        "{LLM4REC} train --config {CONFIG_FILE} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} 2>&1 | tee {log}"


rule evaluate:
    """Score the rankings with the one evaluator: per-user metrics and run means."""
    input:
        [f"{RUN}/{name}" for name in RUN_FILES],
    output:
        metrics=f"{RUN}/metrics.json",
        per_user=[f"{RUN}/per_user_valid.parquet", f"{RUN}/per_user_test.parquet"],
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{model}}/seed{{seed}}.log",
    shell:
        "{LLM4REC} evaluate --config {CONFIG_FILE} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} 2>&1 | tee {log}"


rule track:
    """Mirror the finished run into MLflow (serialised: `--resources mlflow=1`, plus a file lock)."""
    input:
        rules.evaluate.output.metrics,
    output:
        f"{RUN}/mlflow.json",
    resources:
        mlflow=1,
    log:
        f"{LOGS}/track/{{dataset}}/{{model}}/seed{{seed}}.log",
    shell:
        "{LLM4REC} track --config {CONFIG_FILE} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} 2>&1 | tee {log}"


rule summary:
    """Mean +/- std over seeds per dataset, model and metric."""
    input:
        [f"{GRID.grid_dir}/runs/{r['dataset']}/{r['model']}/seed{r['seed']}/metrics.json" for r in cell_runs()],
    output:
        md=f"{GRID.reports_dir}/summary.md",
        csv=f"{GRID.reports_dir}/summary.csv",
    shell:
        "{LLM4REC} summarize --config {CONFIG_FILE} {input}"


rule compare:
    """Paired significance tests (per-user metrics) for the table's family of comparisons."""
    input:
        [f"{folder}/{name}" for folder in run_folders() for name in ("metrics.json", "per_user_test.parquet")],
    output:
        f"{REPORTS}/comparisons.csv",
    params:
        options=lambda w: stable_hash(GRID.report_options()),
        folders=run_folders(),
    shell:
        "{LLM4REC} compare --config {CONFIG_FILE} --out {REPORTS} {params.folders}"


rule report:
    """LaTeX/Markdown/CSV tables, slices and figures; logged to an MLflow summary run."""
    input:
        comparisons=rules.compare.output,
        metrics=[f"{folder}/metrics.json" for folder in run_folders()],
    output:
        REPORT_FILES,
        marker=f"{GRID.grid_dir}/report_mlflow.json",
    params:
        options=lambda w: stable_hash(GRID.report_options()),
        folders=run_folders(),
    resources:
        mlflow=1,
    log:
        f"{LOGS}/report.log",
    shell:
        "{LLM4REC} report --config {CONFIG_FILE} --out {REPORTS} --comparisons {input.comparisons} "
        "{params.folders} 2>&1 | tee {log}"


onsuccess:
    print(
        f"[llm4rec] grid '{GRID.name}' done. Summary: {GRID.reports_dir}/summary.md; tables, slices and "
        f"figures: {GRID.reports_dir}/results_table.tex (.md, .csv), cost_table.*, figures/; "
        f"runs: {GRID.grid_dir}/runs/<dataset>/<model>/seed<N>/ (mlflow.json holds each MLflow run id); "
        f"MLflow UI: mlflow ui --backend-store-uri {GRID.tracking_uri()}"
    )
