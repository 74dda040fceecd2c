"""`llm4rec reproduce RUN`: rebuild one finished run from its record and say whether it comes out the same.

RUN is a run folder (<results>/<grid>/runs/<dataset>/<model>/seed<N>) or an MLflow run id. The
recorded run config (run.json "run") becomes a one-cell grid in a scratch folder, whose config hash
must equal the recorded one; what the run consumed (another run's exports, an artifact) is rebuilt
there first, from its own record. Then prepare -> [artifacts, upstream runs] -> train -> evaluate,
and a comparison: every recorded metric against the rebuilt one, plus the git commit and the
environment (packages, device, threads). Exit status 1 when a metric differs beyond the tolerance.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llm4rec.config import ConfigError, load_grid
from llm4rec.data.atomic import DataError
from llm4rec.environment import environment
from llm4rec.io import read_json, write_json, write_text


@dataclass
class Recorded:
    """A finished run as recorded: run.json, metrics.json, and the folder it lives in (None from MLflow)."""

    run: dict
    metrics: dict
    folder: Path | None


@dataclass
class ScratchGrid:
    """The grid config being rebuilt: one dataset, the run's model and whatever it consumed."""

    raw: dict[str, Any]
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (name, key) to build first
    upstream: list[tuple[str, int]] = field(default_factory=list)  # (model, seed), in dependency order


def load_recorded(target: str, tracking_uri: str) -> Recorded:
    folder = Path(target)
    if folder.is_dir():
        for name in ("run.json", "metrics.json"):
            if not (folder / name).is_file():
                raise DataError(f"reproduce: {folder / name} not found; RUN must be a finished, evaluated run folder "
                                "(<results>/<grid>/runs/<dataset>/<model>/seed<N>) or an MLflow run id")
        return Recorded(read_json(folder / "run.json"), read_json(folder / "metrics.json"), folder.resolve())
    if len(target) == 32 and all(c in "0123456789abcdef" for c in target):
        from llm4rec.tracking import download_run_record

        files = download_run_record(tracking_uri, target, Path(tempfile.mkdtemp(prefix="llm4rec-mlflow-")))
        return Recorded(read_json(files["run.json"]), read_json(files["metrics.json"]), None)
    raise DataError(f"reproduce: '{target}' is neither a run folder nor an MLflow run id (32 hex characters)")


def _entry(run: dict, threads: int | None) -> dict[str, Any]:
    """The grid's model entry that gives back this run config (and so its config hash)."""
    config = run["run"]
    entry: dict[str, Any] = {"name": config["model"], "params": config["params"], "seeds": [config["seed"]]}
    if threads:
        entry["threads"] = threads
    if "evaluation" in config:
        entry["evaluation"] = {k: config["evaluation"][k] for k in ("cutoffs", "test_users", "valid_users")}
    return entry


def scratch_grid(recorded: Recorded, results: Path) -> ScratchGrid:
    config = recorded.run["run"]
    dataset = config["dataset"]
    evaluation: dict[str, Any] = {"cutoffs": config["cutoffs"]}
    if "evaluation" in config:
        evaluation["sample_seed"] = config["evaluation"]["sample_seed"]
    if "selection_metric" in config:
        evaluation["selection_metric"] = config["selection_metric"]
    grid = ScratchGrid({"name": config["grid"], "results_dir": str(results), "reports_dir": str(results.parent / "reports"),
                        "device": recorded.run.get("device", "cpu"), "seeds": [config["seed"]], "evaluation": evaluation,
                        "datasets": {dataset: config["dataset_config"]}, "models": []})
    _add_model(grid, recorded, recorded.folder)
    return grid


def _add_model(grid: ScratchGrid, recorded: Recorded, folder: Path | None) -> None:
    config = recorded.run["run"]
    entry = _entry(recorded.run, recorded.run.get("environment", {}).get("torch_threads"))
    inputs = config.get("inputs", {})
    if inputs:
        if folder is None:
            raise DataError(f"reproduce: {config['model']}/{config['dataset']}/seed{config['seed']} consumes "
                            f"{', '.join(inputs)}; rebuilding those needs the run folder (give RUN as a folder)")
        grid_dir = folder.parents[3]  # <grid>/runs/<dataset>/<model>/seed<N>
        entry["inputs"] = {}
        for slot, source in inputs.items():
            if "run" in source:
                upstream_folder = grid_dir / "runs" / config["dataset"] / source["run"] / f"seed{source['seed']}"
                if not (upstream_folder / "run.json").is_file():
                    raise DataError(f"reproduce: {folder} consumed '{slot}' from {upstream_folder}, whose run.json is gone")
                upstream = Recorded(read_json(upstream_folder / "run.json"), {}, upstream_folder)
                if all(m["name"] != source["run"] for m in grid.raw["models"]):
                    _add_model(grid, upstream, upstream_folder)
                    grid.upstream.append((source["run"], int(source["seed"])))
                entry["inputs"][slot] = {"run": source["run"], "seed": source["seed"]}
            else:
                marker = grid_dir / "artifacts" / config["dataset"] / source["artifact"] / source["config_hash"] / "artifact.json"
                if not marker.is_file():
                    raise DataError(f"reproduce: {folder} consumed '{slot}' from artifact {marker.parent}, whose artifact.json is gone")
                entry["inputs"][slot] = {"artifact": source["artifact"], "params": read_json(marker)["params"]}
                grid.artifacts.append((source["artifact"], source["config_hash"]))
    grid.raw["models"].append(entry)


def metric_differences(recorded: dict, rebuilt: dict) -> list[tuple[str, float, float, float]]:
    """(phase_metric, recorded, rebuilt, |difference|) for every metric the record has."""
    rows = []
    for phase in ("valid", "test"):
        for name, value in sorted(recorded.get(phase, {}).items()):
            old, new = float(value), float(rebuilt.get(phase, {}).get(name, float("nan")))
            if math.isnan(old) or math.isnan(new):
                diff = 0.0 if math.isnan(old) and math.isnan(new) else math.inf
            else:
                diff = abs(new - old)
            rows.append((f"{phase}_{name}", old, new, diff))
    return rows


def environment_differences(recorded: dict, now: dict) -> list[tuple[str, str, str]]:
    """(what, recorded, now) for the git commit, package versions, device and threads that differ."""
    keys = ["git_commit", "python", "platform", "processor", "cpu_count", "torch_threads", "cuda"]
    rows = [(k, str(recorded.get(k)), str(now.get(k))) for k in keys if str(recorded.get(k)) != str(now.get(k))]
    before, after = recorded.get("packages", {}), now.get("packages", {})
    rows += [(f"package {p}", str(before.get(p)), str(after.get(p))) for p in sorted(set(before) | set(after))
             if before.get(p) != after.get(p)]
    return rows


def reproduce(target: str, scratch: Path | None = None, tolerance: float | None = None,
              tracking_uri: str = "") -> int:
    """Rebuild RUN in `scratch`, print the differences, return the exit status (0: within tolerance)."""
    from llm4rec.runner import build_artifact, evaluate_run, prepare_dataset, train_and_rank

    recorded = load_recorded(target, tracking_uri)
    scratch = Path(scratch or tempfile.mkdtemp(prefix="llm4rec-reproduce-")).resolve()
    grid_spec = scratch_grid(recorded, scratch / "results")
    write_text(scratch / "grid.yaml", yaml.safe_dump(grid_spec.raw, sort_keys=False))
    grid = load_grid(scratch / "grid.yaml")
    config = recorded.run["run"]
    dataset, model, seed = config["dataset"], config["model"], int(config["seed"])
    label = f"{model}/{dataset}/seed{seed}"
    rebuilt_hash = grid.run_hash(dataset, model, seed)
    if rebuilt_hash != recorded.run["config_hash"]:
        raise ConfigError(f"reproduce {label}: the rebuilt config {scratch / 'grid.yaml'} hashes to {rebuilt_hash}, the "
                          f"record says {recorded.run['config_hash']}; the record was written by another version of the "
                          "config loader")
    if tolerance is None:
        tolerance = 0.0 if grid.device == "cpu" else 1e-4
    print(f"[llm4rec] reproducing {label} (config {rebuilt_hash}) in {scratch}", flush=True)
    split = prepare_dataset(grid, dataset)
    if split.meta["checksums"] != recorded.run["split_checksums"]:
        print(f"[llm4rec] note: the rebuilt split's checksums differ from the record's: {split.meta['checksums']} vs "
              f"{recorded.run['split_checksums']}", flush=True)
    for name, key in grid_spec.artifacts:
        build_artifact(grid, dataset, name, key)
    for upstream, upstream_seed in grid_spec.upstream:
        train_and_rank(grid, dataset, upstream, upstream_seed)
    train_and_rank(grid, dataset, model, seed)
    rebuilt = evaluate_run(grid, dataset, model, seed)
    now = read_json(grid.run_dir(dataset, model, seed) / "run.json")

    metrics = metric_differences(recorded.metrics, rebuilt)
    env = environment_differences(recorded.run.get("environment", {}), now.get("environment", environment()))
    if recorded.run.get("device") != now.get("device"):
        env.insert(0, ("device", str(recorded.run.get("device")), str(now.get("device"))))
    beyond = [row for row in metrics if row[3] > tolerance]
    lines = [f"reproduce {label}: {len(metrics) - len(beyond)}/{len(metrics)} metrics within tolerance {tolerance:g}",
             f"  {'metric':28s} {'recorded':>12s} {'reproduced':>12s} {'|diff|':>10s}"]
    lines += [f"{'!' if d > tolerance else ' '} {name:28s} {old:12.6f} {new:12.6f} {d:10.3g}" for name, old, new, d in metrics]
    lines.append("environment: " + ("same git commit, packages, device and threads" if not env else "differs"))
    lines += [f"  {what}: {old} -> {new}" for what, old, new in env]
    print("\n".join(lines), flush=True)
    write_json(scratch / "reproduce.json", {"run": label, "config_hash": rebuilt_hash, "tolerance": tolerance,
                                            "metrics": [dict(zip(("metric", "recorded", "reproduced", "abs_diff"), r, strict=True)) for r in metrics],
                                            "environment": [dict(zip(("what", "recorded", "now"), r, strict=True)) for r in env],
                                            "within_tolerance": not beyond})
    return 1 if beyond else 0
