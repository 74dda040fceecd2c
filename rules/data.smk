# Data: raw files, the split (once per dataset, for every model) and the shared artifacts.


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
        split=f"{DATA}/{layout.SPLIT_JSON}",
        interactions=f"{DATA}/{layout.SPLIT_INTERACTIONS}",
        catalogue=f"{DATA}/{layout.SPLIT_ITEMS}",
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
        name:
            _artifact.name
        input:
            f"{DATA}/{layout.SPLIT_JSON}",
        output:
            str(
                layout.artifact_dir(GRID.grid_dir, "{dataset}", _artifact.name, "{key}")
                / layout.ARTIFACT_JSON
            ),
        params:
            artifact=_artifact.name,
        # from the grid: the inputs naming this artifact may give `resources` beside `params`
        # (an LLM encoder's GPU and time); else llm4rec.config.ARTIFACT_RESOURCES
        resources:
            gpu=lambda w, name=_artifact.name: GRID.artifact_resources(w.dataset, name, w.key)["gpu"],
            mem_mb=lambda w, name=_artifact.name: GRID.artifact_resources(w.dataset, name, w.key)[
                "mem_mb"
            ],
            runtime=lambda w, attempt, name=_artifact.name: attempt
            * GRID.artifact_resources(w.dataset, name, w.key)["runtime"],
        log:
            f"{LOGS}/artifact/{{dataset}}/{_artifact.name}/{{key}}.log",
        shell:
            "{LLM4REC} artifact --config {CONFIG_FILE} --dataset {wildcards.dataset} "
            "--artifact {params.artifact} --key {wildcards.key} 2>&1 | tee {log}"
