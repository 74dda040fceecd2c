"""The only place that talks to MLflow.

Per-run files are the source of truth; this module mirrors them into an MLflow store, shaped
for MLflow's runs table and compare view (issue 13):

- the experiment is tagged as model training (``mlflow.experimentKind``), so the UI opens on
  its runs, not on an empty GenAI overview;
- params are what a researcher chose and compares (``run_params``): model, display name,
  dataset, seed, backbone, prompt-template id, budget, inputs and ``hp.*`` (the model's full
  hyper-parameters, defaults filled in), read from the run's own run.json (never from today's
  grid YAML), with one key set per paradigm (from the registry) so compare-view columns line
  up; the fully resolved configs (RecBole's ~100 settings, prompt text) are the
  ``resolved_config.json`` artifact;
- the split is the run's dataset input (name, digest of the split's checksums, source folder);
- the run starts when training started and ends when ranking ended (run.json ``timing``);
- metrics: every cutoff of valid and test plus cost figures, the same keys for every model;
  training curves as step series under ``curve.*`` (``training_curves``: SFT loss, the
  checkpoint-selection validation curve, and every per-step figure of an RL stage);
- tags: dataset, model, paradigm, seed, config hash, git commit; artifacts: per-user metrics,
  rankings, run record.

Safe with parallel jobs: writes are serialised by a file lock beside the store (SQLite
rejects concurrent writers), and a rerun never duplicates a run: a run is keyed by grid,
dataset, model and seed; an identical one is reused, a stale one replaced (soft-deleted).
Telemetry is switched off before MLflow is imported.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llm4rec import layout
from llm4rec.config import Grid, local_store_uri
from llm4rec.environment import redact
from llm4rec.io import read_json, sha256_file, stable_hash, write_json
from llm4rec.models import (
    MODELS,
    flat,
    hyperparameters,
    model_title,
    registered_costs,
    row_function,
)

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

# MLflow 3 records an experiment's kind as this experiment tag (the UI's own kind selector writes
# it); model training experiments open on the runs table.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# Bumped when what a run logs changes, so a rerun of `track` replaces runs logged the old way.
TRACKING_SCHEMA = "5"
NOT_APPLICABLE = "n/a"  # a param of the paradigm that this model does not have
# Hyper-parameters that together are the prompt template: logged as one id (prompt_template), text
# in the artifact. Every LLM row words its prompt in `prompt`; the rest are the keys that run
# records written before that (llm4rec.params.REWORDED) hold, logged as they were.
TEMPLATE_FIELDS = ("prompt", "instruction", "response", "answer_prefix")
# Settings that do not shape what a model learns (where the backbone is cached, the text-retention
# sample, RecBole's progress bars): in resolved_config.json, not among the params, so a grid that
# sets one for a row does not give that row a column of its own. The backbone's name is the
# `backbone` param.
NOT_HYPERPARAMETERS = ("backbone.", "text_retention.", "show_progress")
KEPT_BACKBONE_FIELDS = ("backbone.dtype",)


def _input_label(source: dict[str, Any]) -> str:
    if "run" in source:
        return f"{source['run']} (seed {source.get('seed', '?')})"
    return f"{source.get('artifact')} {source.get('config_hash', '')}".strip()


def _is_hyperparameter(key: str) -> bool:
    return key.split(".")[0] not in TEMPLATE_FIELDS and (
        key in KEPT_BACKBONE_FIELDS or not key.startswith(NOT_HYPERPARAMETERS)
    )


def _budget(model: str, hp: dict[str, Any]) -> str:
    """The training budget, as the row's module words it (`train_budget(hp)`); a row that trains
    nothing of its own (a stage ranking with its parent's weights, a k-NN) declares none."""
    describe = row_function(MODELS[model], "train_budget")
    return (describe(hp) if describe is not None else None) or NOT_APPLICABLE


def describe_run(
    config: dict[str, Any],
    resolved: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    *,
    recorded: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, resolved config) of one run config (run.json's `run`): the params a researcher
    compares and the full record behind them. `resolved`: a library's resolved config (RecBole's),
    `evaluation`: the run's user samples. `recorded`: the params are a run record's, resolved when
    it trained; they are logged as written, so a default or key that changed since does not
    rewrite what an old run shows."""
    model = config["model"]
    if recorded and MODELS[model].hyperparameters is None:
        hp = flat(config.get("params", {}))
    else:
        hp = hyperparameters(model, config.get("params", {}), resolved)
    # a mapping of chosen names (an RL stage's reward weights) is one param, so a paradigm's runs
    # keep one key set whichever names they choose
    rewards = {k.removeprefix("rewards."): v for k, v in hp.items() if k.startswith("rewards.")}
    if rewards:
        hp = {k: v for k, v in hp.items() if not k.startswith("rewards.")} | {
            "rewards": json.dumps(rewards, sort_keys=True)
        }
    template = {key: value for key, value in hp.items() if key.split(".")[0] in TEMPLATE_FIELDS}
    evaluation = evaluation or config.get("evaluation") or {}
    params: dict[str, Any] = {
        "model": model,
        "display_name": model_title(model),
        "paradigm": config["paradigm"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "grid": config.get("grid", ""),
        "backbone": hp.get("backbone.name_or_path") or NOT_APPLICABLE,
        "backbone_revision": hp.get("backbone.revision") or NOT_APPLICABLE,
        "prompt_template": stable_hash(template)[:8] if template else NOT_APPLICABLE,
        "budget.train": _budget(model, hp),
        # still improving at the end of its budget? (run.json's convergence: run_params)
        "budget.convergence": NOT_APPLICABLE,
        "budget.valid_users": evaluation.get("valid_users") or "all",
        "budget.test_users": evaluation.get("test_users") or "all",
    }
    params |= {
        f"inputs.{slot}": _input_label(source) for slot, source in config.get("inputs", {}).items()
    }
    params |= {f"hp.{key}": value for key, value in hp.items() if _is_hyperparameter(key)}
    record = {
        "run": config,
        "hyperparameters": hp,
        "prompt_template": template,
        "library_config": resolved or {},
    }
    return params, record


def paradigm_param_keys(paradigm: str) -> list[str]:
    """The param keys every run of `paradigm` logs (missing ones as 'n/a'), so the compare view's
    columns line up across the paradigm's models: those of each registered model of the
    paradigm with its defaults. From the registry, not a grid: what MLflow shows for a run
    depends on its own folder and the code, never on today's grid YAML."""
    keys: dict[str, None] = {}
    for name, spec in MODELS.items():
        if spec.paradigm == paradigm:
            config = {
                "model": name,
                "paradigm": paradigm,
                "dataset": "",
                "seed": 0,
                "params": {},
                "inputs": dict.fromkeys(spec.inputs, {}),
            }
            keys |= dict.fromkeys(describe_run(config)[0])
    return list(keys)


def run_params(run: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(MLflow params, resolved_config.json) of one finished run, from its run.json alone."""
    config = run["run"]
    params, record = describe_run(
        config, run.get("fit", {}).get("recbole_config"), run.get("evaluation"), recorded=True
    )
    params["budget.convergence"] = (run.get("convergence") or {}).get("verdict", NOT_APPLICABLE)
    keys = paradigm_param_keys(config["paradigm"])
    keys += [key for key in params if key not in keys]  # e.g. a setting its grid gave a new shape
    return {key: str(params.get(key, NOT_APPLICABLE))[:5000] for key in keys}, record


def split_digest(checksums: dict[str, str]) -> str:
    """The split's one digest (MLflow's dataset digest): sha256 over its files' sha256
    (split.json), 16 hex."""
    text = "".join(f"{name}={checksums[name]}\n" for name in sorted(checksums))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_input(grid: Grid, dataset: str):
    """The run's split as an MLflow dataset input: name, digest of its checksums, source folder,
    sizes."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    folder = grid.split_dir(dataset)
    meta = read_json(folder / layout.SPLIT_JSON)
    stats = meta.get("stats", {})
    profile = {
        key: stats[key]
        for key in (
            "users",
            "items",
            "train_interactions",
            "valid_interactions",
            "test_interactions",
        )
        if key in stats
    }
    source = json.dumps({"uri": folder.resolve().as_uri()})
    entity = Dataset(
        name=dataset,
        digest=split_digest(meta["checksums"]),
        source_type="local",
        source=source,
        schema=json.dumps({"split": meta.get("config", {}).get("split", {})}),
        profile=json.dumps(profile),
    )
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])


def run_metrics(metrics: dict) -> dict[str, float]:
    """The metric keys logged for every run: test_*, valid_* and cost figures."""
    out = {
        f"{phase}_{name}": float(value)
        for phase in ("test", "valid")
        for name, value in metrics[phase].items()
    }
    out |= {
        c.key: float(metrics["cost"][c.key])
        for c in registered_costs()
        if c.always or c.key in metrics["cost"]
    }
    return out


@contextmanager
def store_lock(results_dir: Path) -> Iterator[None]:
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / layout.STORE_LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _retry(fn, attempts: int = 8):
    for i in range(attempts):
        try:
            return fn()
        except Exception as err:  # sqlite "database is locked" surfaces as several MLflow types
            if "locked" not in str(err).lower() or i == attempts - 1:
                raise
            time.sleep(0.5 * 2**i)


class TrackingError(RuntimeError):
    """The MLflow store cannot be reached or written; the run's own files are complete."""


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """Fail fast, naming the URI, when a tracking server does not answer (MLflow's client would
    retry for minutes). Any HTTP answer, even 401 from an auth-protected server, counts as up."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} cannot be reached ({reason}). The run's files "
            "are complete; start the server (make tracking-server) or point MLFLOW_TRACKING_URI / "
            "tracking.uri at a reachable one, then rerun the same snakemake command: it logs only "
            "the runs still missing, without duplicates"
        ) from None


def client_and_experiment(grid: Grid):
    from mlflow.tracking import MlflowClient

    uri = grid.tracking_uri()
    check_reachable(uri)
    local = grid.results_dir / layout.LOCAL_STORE
    if uri == local_store_uri(grid.results_dir) and local.is_file():
        relocate_store(grid.results_dir)  # results/ moved or was copied since the store was written
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(grid.experiment)
    if experiment is None:
        location = None
        if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
            location = (grid.results_dir / layout.LOCAL_ARTIFACTS).resolve().as_uri()
        experiment = client.get_experiment(
            client.create_experiment(grid.experiment, artifact_location=location)
        )
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if "mlflow.note.content" not in experiment.tags:
        client.set_experiment_tag(
            experiment.experiment_id,
            "mlflow.note.content",
            (
                f"llm4rec-bench grid `{grid.name}` ({grid.path}): one run per dataset x model x "
                "seed, every model ranking the full catalogue minus the user's history. Params: "
                "what each run chose (hp.* = the model's hyper-parameters); Dataset: the split "
                "(digest = its checksums)."
            ),
        )
    return client, experiment.experiment_id


def relocate_store(results_dir: Path) -> dict[str, int]:
    """Point a local store's artifact locations (experiments, runs) and dataset sources at
    `results_dir`, after the folder was moved or copied: MLflow stores them as absolute file URIs,
    so every artifact link breaks otherwise. Idempotent; returns the rows changed per table.
    (MLflow has no API for this; these are its own columns.)"""
    db = results_dir / layout.LOCAL_STORE
    if not db.is_file():
        raise TrackingError(
            f"{db}: no MLflow store here (give the results folder that holds mlflow.db)"
        )
    new_root = results_dir.resolve().as_uri()
    changed = {"experiments": 0, "runs": 0, "datasets": 0}
    with sqlite3.connect(db, timeout=60) as con:
        old_roots = {
            m.group(1)
            for (location,) in con.execute("SELECT artifact_location FROM experiments")
            if location
            and (m := re.fullmatch(r"(file://.+)/mlartifacts", location))
            and m.group(1) != new_root
        }
        for old in old_roots:
            for table, key, column in (
                ("experiments", "experiment_id", "artifact_location"),
                ("runs", "run_uuid", "artifact_uri"),
                ("datasets", "dataset_uuid", "dataset_source"),
            ):
                rows = con.execute(
                    f"SELECT {key}, {column} FROM {table} WHERE instr({column}, ?) > 0",
                    (old + "/",),
                ).fetchall()
                rows += con.execute(
                    f"SELECT {key}, {column} FROM {table} WHERE {column} = ?",
                    (old + "/mlartifacts",),
                ).fetchall()
                for row_key, value in dict(rows).items():
                    con.execute(
                        f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                        (value.replace(old + "/", new_root + "/"), row_key),
                    )
                    changed[table] += 1
    return changed


def log_run(grid: Grid, dataset: str, model: str, seed: int) -> dict:
    """Mirror one finished, evaluated run into MLflow; write and return <run_dir>/mlflow.json."""
    from mlflow.entities import Metric, Param, RunTag

    run_dir = grid.run_dir(dataset, model, seed)
    metrics, run = read_json(run_dir / layout.METRICS), read_json(run_dir / layout.RUN_JSON)
    run_key = f"{grid.name}/{dataset}/{model}/seed{seed}"
    digest = sha256_file(run_dir / layout.METRICS)
    now = time.time()
    # runs trained before timing was recorded start and end at logging time
    timing = run.get("timing") or {}
    start_ms, end_ms = (int(1000 * timing.get(key, now)) for key in ("train_start", "rank_end"))
    with store_lock(grid.results_dir):
        client, experiment_id = _retry(lambda: client_and_experiment(grid))
        existing = _retry(
            lambda: client.search_runs([experiment_id], f"tags.`llm4rec.run_key` = '{run_key}'")
        )
        reused = None
        for old in existing:
            if (
                old.data.tags.get("llm4rec.metrics_sha256") == digest
                and reused is None
                and old.data.tags.get("llm4rec.tracking_schema") == TRACKING_SCHEMA
            ):
                reused = old.info.run_id
            else:
                # soft delete: an earlier result, or logged the old way
                client.delete_run(old.info.run_id)
        if reused is None:
            tags = {
                "llm4rec.run_key": run_key,
                "llm4rec.metrics_sha256": digest,
                "llm4rec.tracking_schema": TRACKING_SCHEMA,
                "grid": grid.name,
                "dataset": dataset,
                "model": model,
                "display_name": model_title(model),
                "paradigm": metrics["paradigm"],
                "seed": str(seed),
                "config_hash": run["config_hash"],
                "git_commit": run["environment"]["git_commit"],
                "device": run["device"],
                "mlflow.runName": f"{model}/{dataset}/seed{seed}",
            }
            tags = redact(tags)
            mlrun = _retry(
                lambda: client.create_run(
                    experiment_id, start_time=start_ms, run_name=tags["mlflow.runName"]
                )
            )
            run_id = mlrun.info.run_id
            params, resolved = run_params(run)
            params = redact(params)
            params_list = [Param(k[:250], v) for k, v in sorted(params.items())]
            metric_list = [
                Metric(k, v, _metric_time(k, timing, end_ms), 0)
                for k, v in sorted(run_metrics(metrics).items())
            ]
            train_ms = int(1000 * timing.get("train_end", end_ms / 1000))
            metric_list += [Metric(k, v, train_ms, step) for k, v, step in training_curves(run)]
            tag_list = [RunTag(k, v) for k, v in tags.items()]
            for i in range(0, max(len(params_list), len(metric_list)), 100):
                _retry(
                    lambda i=i: client.log_batch(
                        run_id,
                        metrics=metric_list[i : i + 100],
                        params=params_list[i : i + 100],
                        tags=tag_list if i == 0 else [],
                    )
                )
            if (grid.split_dir(dataset) / layout.SPLIT_JSON).is_file():
                _retry(lambda: client.log_inputs(run_id, datasets=[dataset_input(grid, dataset)]))
            for name in layout.RUN_FILES:
                if (run_dir / name).is_file():
                    client.log_artifact(run_id, str(run_dir / name))
            with tempfile.TemporaryDirectory() as tmp:
                write_json(Path(tmp) / "resolved_config.json", redact(resolved))
                client.log_artifact(run_id, str(Path(tmp) / "resolved_config.json"))
            _retry(lambda: client.set_terminated(run_id, end_time=max(end_ms, start_ms)))
            reused = run_id
    record = {
        "run_id": reused,
        "experiment_id": experiment_id,
        "experiment": grid.experiment,
        "tracking_uri": redact(grid.tracking_uri()),
        "run_key": run_key,
    }
    write_json(run_dir / layout.MLFLOW_JSON, record)
    print(f"[llm4rec] MLflow run {reused} ({run_key}) in {record['tracking_uri']}", flush=True)
    return record


def training_curves(run: dict) -> list[tuple[str, float, int]]:
    """(key, value, step) of a run's training curves, from its run.json: `curve.train_loss`
    (SFT, per optimiser step; AlphaRec, per epoch), `curve.valid_<metric>` (checkpoint selection;
    RecBole's by evaluation; AlphaRec's by epoch), and
    `curve.grpo.<figure>` (an RL stage: reward and its parts, KL, zero-advantage share, entropy,
    clip fraction, ...), and `chosen.<name>` (a weight selected on validation, fit's `chosen`)."""
    fit = run.get("fit", {})
    out = []
    losses = fit.get("sft_losses") or []
    total = (run.get("run", {}).get("params", {}).get("sft") or {}).get("steps", len(losses))
    first = total - len(losses)  # a resumed run logged the steps after its checkpoint
    out += [("curve.train_loss", float(v), first + i + 1) for i, v in enumerate(losses)]
    # a model trained by epochs (AlphaRec): the mean training loss of each epoch, at its number
    out += [
        ("curve.train_loss", float(v), i + 1) for i, v in enumerate(fit.get("epoch_losses") or [])
    ]
    for point in fit.get("valid_curve") or []:
        # LLM runs validate at optimiser steps, RecBole at numbered evaluations, AlphaRec at epochs
        step = int(point.get("step", point.get("evaluation", point.get("epoch", 0))))
        out += [
            (f"curve.valid_{k}", float(v), step)
            for k, v in point.items()
            if k not in ("step", "evaluation", "epoch")
        ]
    for entry in fit.get("grpo_log") or []:
        out += [
            (f"curve.grpo.{k}", float(v), int(entry["step"]))
            for k, v in entry.items()
            if k != "step"
        ]
    # what training chose on validation beside the checkpoint (RTA's gate weight, AlphaRec's
    # intention weight): `chosen.<name>`
    out += [(f"chosen.{k}", float(v), 0) for k, v in (fit.get("chosen") or {}).items()]
    return out


def _metric_time(key: str, timing: dict[str, float], default_ms: int) -> int:
    """When a metric became known: training figures at the end of training, the rest at the end
    of ranking."""
    stage = "train_end" if key.startswith("train_") or key.startswith("parameters_") else "rank_end"
    return int(1000 * timing[stage]) if stage in timing else default_ms


def log_report(
    grid: Grid, files: list[Path], summary: dict[str, float] | None = None, kind: str = "main"
) -> dict:
    """Log a grid's report (tables, figures) as artifacts of one summary run per grid and report
    kind, replacing the previous one (one live report run per grid and kind)."""
    from mlflow.entities import Metric, RunTag

    run_key = f"{grid.name}/report" if kind == "main" else f"{grid.name}/report-{kind}"
    with store_lock(grid.results_dir):
        client, experiment_id = _retry(lambda: client_and_experiment(grid))
        for old in _retry(
            lambda: client.search_runs([experiment_id], f"tags.`llm4rec.run_key` = '{run_key}'")
        ):
            client.delete_run(old.info.run_id)
        tags = {
            "llm4rec.run_key": run_key,
            "grid": grid.name,
            "model": "report",
            "paradigm": "report",
            "mlflow.runName": f"{run_key.split('/', 1)[1]}/{grid.name}",
        }
        run_id = _retry(
            lambda: client.create_run(experiment_id, run_name=tags["mlflow.runName"])
        ).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in sorted((summary or {}).items())]
        _retry(
            lambda: client.log_batch(
                run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()]
            )
        )
        for path in files:
            client.log_artifact(
                run_id,
                str(path),
                artifact_path=path.parent.name if path.parent.name == "figures" else None,
            )
        _retry(lambda: client.set_terminated(run_id))
    print(f"[llm4rec] report logged to MLflow run {run_id} ({run_key})", flush=True)
    return {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "tracking_uri": redact(grid.tracking_uri()),
    }


def download_run_record(uri: str, run_id: str, dest: Path) -> dict[str, Path]:
    """run.json and metrics.json of one MLflow run, and its rankings and per-user metrics where
    logged (for `llm4rec reproduce RUN_ID`)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        raise TrackingError(
            f"MLflow store {uri}: no such database file "
            "(give --tracking-uri or MLFLOW_TRACKING_URI)"
        )
    client = MlflowClient(tracking_uri=uri)
    try:
        client.get_run(run_id)
        files = {
            name: Path(client.download_artifacts(run_id, name, str(dest)))
            for name in (layout.RUN_JSON, layout.METRICS)
        }
        logged = {info.path for info in client.list_artifacts(run_id)}
        # the rankings and per-user metrics, where logged: reproduce judges float noise by them
        files |= {
            name: Path(client.download_artifacts(run_id, name, str(dest)))
            for name in layout.RUN_FILES
            if name.endswith(".parquet") and name in logged
        }
        return files
    except MlflowException as err:
        raise TrackingError(
            f"MLflow store {redact(uri)}: run {run_id} or its run.json/metrics.json artifacts "
            "not found "
            f"({err.message.splitlines()[0] if err.message else err})"
        ) from None


def download_runs(
    uri: str, experiment: str, dest: str | Path, tags: dict[str, str] | None = None
) -> list[Path]:
    """Download the evaluated runs of an MLflow experiment (filtered by tags) into run folders
    below `dest` (<dataset>/<model>/seed<N>/), with the files the report reads."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ValueError(f"MLflow store {redact(uri)}: no experiment named '{experiment}'")
    clauses = ["tags.`llm4rec.run_key` != ''"] + [
        f"tags.`{k}` = '{v}'" for k, v in (tags or {}).items()
    ]
    names = (layout.METRICS, layout.RUN_JSON, *(layout.per_user(p) for p in layout.PHASES))
    folders = []
    for mlrun in client.search_runs(
        [found.experiment_id], " and ".join(clauses), max_results=10_000
    ):
        run_tags = mlrun.data.tags
        if run_tags.get("paradigm") == "report":
            continue
        folder = Path(dest) / run_tags["dataset"] / run_tags["model"]
        folder = folder / layout.seed_folder(run_tags["seed"])
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            client.download_artifacts(mlrun.info.run_id, name, str(folder))
        folders.append(folder)
    return folders
