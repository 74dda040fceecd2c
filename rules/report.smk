# Over finished runs: the summary, the paired tests and the report, once per report kind
# (`main`: reports/, every row against the best baseline; `ablations`: reports/ablations/, every
# variant against its parent).


rule summary:
    """Mean +/- std over seeds per dataset, model and metric (the main job's runs)."""
    input:
        run_files("main", layout.METRICS),
    output:
        md=f"{GRID.reports_dir}/summary.md",
        csv=f"{GRID.reports_dir}/summary.csv",
    shell:
        "{LLM4REC} summarize --config {CONFIG_FILE} {input}"


for _kind in REPORT_KINDS:
    _suffix = "" if _kind == "main" else f"_{_kind}"

    rule:
        """Paired significance tests (per-user metrics) for the report's family of comparisons."""
        name:
            f"compare{_suffix}"
        input:
            runs=run_files(_kind, layout.METRICS, layout.per_user("test")),
            # the ablation report keeps the main report's verdict on a pair both test
            verdicts=[] if _kind == "main" else f"{GRID.report_dir('main')}/comparisons.csv",
        output:
            f"{GRID.report_dir(_kind)}/comparisons.csv",
        params:
            options=lambda w: stable_hash(GRID.report_options()),
            folders=run_folders(_kind),
            kind=_kind,
            out=str(GRID.report_dir(_kind)),
            verdicts="" if _kind == "main" else f"--verdicts {GRID.report_dir('main')}/comparisons.csv",
        shell:
            "{LLM4REC} compare --config {CONFIG_FILE} --kind {params.kind} --out {params.out} "
            "{params.verdicts} {params.folders}"

    rule:
        """LaTeX/Markdown/CSV tables, slices and figures; logged to an MLflow summary run."""
        name:
            f"report{_suffix}"
        input:
            comparisons=f"{GRID.report_dir(_kind)}/comparisons.csv",
            metrics=run_files(_kind, layout.METRICS),
        output:
            report_outputs(_kind),
            marker=str(GRID.report_marker(_kind)),
        params:
            options=lambda w: stable_hash(GRID.report_options()),
            folders=run_folders(_kind),
            kind=_kind,
            out=str(GRID.report_dir(_kind)),
        resources:
            mlflow=1,
        log:
            f"{LOGS}/report{_suffix}.log",
        shell:
            "{LLM4REC} report --config {CONFIG_FILE} --kind {params.kind} --out {params.out} "
            "--comparisons {input.comparisons} {params.folders} 2>&1 | tee {log}"
