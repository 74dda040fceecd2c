"""The only place that talks to MLflow.

Per-run files are the source of truth; this module mirrors them into an MLflow store:
params (the flattened run config), metrics (every cutoff of valid and test, plus cost
figures; the same keys for every model), tags (dataset, model, paradigm, seed, config
hash, git commit) and artifacts (per-user metrics, rankings, config, environment).

Safe with parallel jobs: writes are serialised by a file lock beside the store (SQLite
rejects concurrent writers), and a rerun never duplicates a run: a run is keyed by grid,
dataset, model and seed; an identical one is reused, a stale one replaced (soft-deleted).
Telemetry is switched off before MLflow is imported.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llm4rec.config import Grid
from llm4rec.environment import redact
from llm4rec.io import read_json, sha256_file, write_json
from llm4rec.models import registered_costs

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

ARTIFACTS = ("metrics.json", "run.json", "per_user_valid.parquet", "per_user_test.parquet",
             "rankings_valid.parquet", "rankings_test.parquet")


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """{'params.learning_rate': '0.01', ...}: nested config as MLflow params."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out |= flatten(value, f"{prefix}{key}.")
    else:
        out[prefix.rstrip(".")] = str(obj)[:5000]
    return out


def run_metrics(metrics: dict) -> dict[str, float]:
    """The metric keys logged for every run: test_*, valid_* and cost figures."""
    out = {f"{phase}_{name}": float(value) for phase in ("test", "valid") for name, value in metrics[phase].items()}
    out |= {c.key: float(metrics["cost"][c.key]) for c in registered_costs() if c.always or c.key in metrics["cost"]}
    return out


@contextmanager
def store_lock(results_dir: Path) -> Iterator[None]:
    results_dir.mkdir(parents=True, exist_ok=True)
    with open(results_dir / ".mlflow.lock", "w") as fh:
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
            f"MLflow tracking server {redact(uri)} cannot be reached ({reason}). The run's files are complete; start "
            "the server (make tracking-server) or point MLFLOW_TRACKING_URI / tracking.uri at a reachable one, then "
            "rerun the same snakemake command: it logs only the runs still missing, without duplicates") from None


def client_and_experiment(grid: Grid):
    from mlflow.tracking import MlflowClient

    uri = grid.tracking_uri()
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(grid.experiment)
    if experiment is not None:
        return client, experiment.experiment_id
    location = None
    if uri.startswith("sqlite:") or uri.startswith("file:") or "://" not in uri:
        location = (grid.results_dir / "mlartifacts").resolve().as_uri()
    return client, client.create_experiment(grid.experiment, artifact_location=location)


def log_run(grid: Grid, dataset: str, model: str, seed: int) -> dict:
    """Mirror one finished, evaluated run into MLflow; write and return <run_dir>/mlflow.json."""
    from mlflow.entities import Metric, Param, RunTag

    run_dir = grid.run_dir(dataset, model, seed)
    metrics, run = read_json(run_dir / "metrics.json"), read_json(run_dir / "run.json")
    run_key = f"{grid.name}/{dataset}/{model}/seed{seed}"
    digest = sha256_file(run_dir / "metrics.json")
    with store_lock(grid.results_dir):
        client, experiment_id = _retry(lambda: client_and_experiment(grid))
        existing = _retry(lambda: client.search_runs([experiment_id], f"tags.`llm4rec.run_key` = '{run_key}'"))
        reused = None
        for old in existing:
            if old.data.tags.get("llm4rec.metrics_sha256") == digest and reused is None:
                reused = old.info.run_id
            else:
                client.delete_run(old.info.run_id)  # soft delete: stale result of an earlier training
        if reused is None:
            tags = {
                "llm4rec.run_key": run_key, "llm4rec.metrics_sha256": digest, "grid": grid.name,
                "dataset": dataset, "model": model, "paradigm": metrics["paradigm"], "seed": str(seed),
                "config_hash": run["config_hash"], "git_commit": run["environment"]["git_commit"],
                "device": run["device"], "mlflow.runName": f"{model}/{dataset}/seed{seed}",
            }
            mlrun = _retry(lambda: client.create_run(experiment_id, run_name=tags["mlflow.runName"]))
            run_id = mlrun.info.run_id
            now = int(time.time() * 1000)
            params = redact(flatten({"run": run["run"], "resolved": run["fit"].get("recbole_config", {})}))
            tags = redact(tags)
            params_list = [Param(k[:250], v) for k, v in sorted(params.items())]
            metric_list = [Metric(k, v, now, 0) for k, v in sorted(run_metrics(metrics).items())]
            tag_list = [RunTag(k, v) for k, v in tags.items()]
            for i in range(0, max(len(params_list), len(metric_list)), 100):
                _retry(lambda i=i: client.log_batch(run_id, metrics=metric_list[i:i + 100], params=params_list[i:i + 100],
                                                    tags=tag_list if i == 0 else []))
            for name in ARTIFACTS:
                if (run_dir / name).is_file():
                    client.log_artifact(run_id, str(run_dir / name))
            _retry(lambda: client.set_terminated(run_id))
            reused = run_id
    record = {"run_id": reused, "experiment_id": experiment_id, "experiment": grid.experiment,
              "tracking_uri": redact(grid.tracking_uri()), "run_key": run_key}
    write_json(run_dir / "mlflow.json", record)
    print(f"[llm4rec] MLflow run {reused} ({run_key}) in {record['tracking_uri']}", flush=True)
    return record


def log_report(grid: Grid, files: list[Path], summary: dict[str, float] | None = None) -> dict:
    """Log a grid's report (tables, figures) as artifacts of one summary run per grid,
    replacing the previous report run (one live report run per grid)."""
    from mlflow.entities import Metric, RunTag

    run_key = f"{grid.name}/report"
    with store_lock(grid.results_dir):
        client, experiment_id = _retry(lambda: client_and_experiment(grid))
        for old in _retry(lambda: client.search_runs([experiment_id], f"tags.`llm4rec.run_key` = '{run_key}'")):
            client.delete_run(old.info.run_id)
        tags = {"llm4rec.run_key": run_key, "grid": grid.name, "model": "report", "paradigm": "report",
                "mlflow.runName": f"report/{grid.name}"}
        run_id = _retry(lambda: client.create_run(experiment_id, run_name=tags["mlflow.runName"])).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in sorted((summary or {}).items())]
        _retry(lambda: client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()]))
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path=path.parent.name if path.parent.name == "figures" else None)
        _retry(lambda: client.set_terminated(run_id))
    print(f"[llm4rec] report logged to MLflow run {run_id} ({run_key})", flush=True)
    return {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": redact(grid.tracking_uri())}


def download_run_record(uri: str, run_id: str, dest: Path) -> dict[str, Path]:
    """run.json and metrics.json of one MLflow run (for `llm4rec reproduce RUN_ID`)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    check_reachable(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise TrackingError(f"MLflow store {uri}: no such database file (give --tracking-uri or MLFLOW_TRACKING_URI)")
    client = MlflowClient(tracking_uri=uri)
    try:
        client.get_run(run_id)
        return {name: Path(client.download_artifacts(run_id, name, str(dest))) for name in ("run.json", "metrics.json")}
    except MlflowException as err:
        raise TrackingError(f"MLflow store {redact(uri)}: run {run_id} or its run.json/metrics.json artifacts not found "
                            f"({err.message.splitlines()[0] if err.message else err})") from None
