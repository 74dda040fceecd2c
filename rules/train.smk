# One run: train and rank, score with the one evaluator, mirror into MLflow.


rule train:
    """Fit one model on the split (and what it consumes); rank top-K for validation and test users; export."""
    input:
        train_inputs,
    output:
        TRAIN_FILES,
        directory(f"{RUN}/{layout.EXPORTS}"),
    params:
        run_hash=lambda w: GRID.run_hash(w.dataset, w.model, int(w.seed)),
    threads: lambda w: GRID.model_threads(w.model)
    resources:
        gpu=model_resource("gpu", 0),
        mem_mb=model_resource("mem_mb", 4000),
        # a retried job (profiles/slurm: retries) asks for the time again per attempt: 1x, 2x, ...
        runtime=lambda w, attempt: model_resource("runtime", 120)(w) * attempt,
    log:
        f"{LOGS}/train/{{dataset}}/{{model}}/seed{{seed}}.log",
    shell:
        "{LLM4REC} train --config {CONFIG_FILE} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} 2>&1 | tee {log}"


rule evaluate:
    """Score the rankings with the one evaluator: per-user metrics and run means."""
    input:
        TRAIN_FILES,
    output:
        EVALUATE_FILES,
    params:
        # the steerability templates, and what the evaluator computes (EVALUATOR_VERSION):
        # changing either re-evaluates (and retrains nothing)
        steer=lambda w: stable_hash(GRID.steer_settings),
        evaluator=EVALUATOR_VERSION,
    log:
        f"{LOGS}/evaluate/{{dataset}}/{{model}}/seed{{seed}}.log",
    shell:
        "{LLM4REC} evaluate --config {CONFIG_FILE} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} 2>&1 | tee {log}"


rule track:
    """Mirror the finished run into MLflow (serialised: `--resources mlflow=1`, plus a file lock)."""
    input:
        f"{RUN}/{layout.METRICS}",
    output:
        f"{RUN}/{layout.MLFLOW_JSON}",
    resources:
        mlflow=1,
    log:
        f"{LOGS}/track/{{dataset}}/{{model}}/seed{{seed}}.log",
    shell:
        "{LLM4REC} track --config {CONFIG_FILE} --dataset {wildcards.dataset} --model {wildcards.model} "
        "--seed {wildcards.seed} 2>&1 | tee {log}"
