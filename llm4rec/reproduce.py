"""`llm4rec reproduce RUN`: rebuild one finished run from its record and say whether it comes out
the same.

RUN is a run folder (<results>/<grid>/runs/<dataset>/<model>/seed<N>) or an MLflow run id. The
recorded run config (run.json "run") becomes a one-cell grid in a scratch folder, whose config hash
must equal the recorded one; what the run consumed (another run's exports, an artifact) is rebuilt
there first, from its own record. Then prepare -> [artifacts, upstream runs] -> train -> evaluate,
and a comparison: every recorded metric against the rebuilt one, with a verdict, plus the git
commit and the environment (packages, device, CPU model and instruction set, BLAS, threads).

Verdicts, per metric:
- bit-identical: the same number (what the same machine kind and thread count gives:
  tests/test_rerun.py);
- within float noise: the number differs, and every user behind the difference has a ranking that
  equals the recorded one up to float noise: the same scores rank by rank and item by item within
  SCORE_RTOL (items may swap only where their scores tie within it, or fall off at a tie at
  depth K);
- different: anything else (a retrained model whose weights moved, an edited record, a bug). A
  paired t-test over the users' values says whether the difference is beyond sampling noise.
Exit status 1 only for a "different" metric whose |difference| exceeds the tolerance.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from llm4rec import layout
from llm4rec.config import ConfigError, load_grid
from llm4rec.data.atomic import DataError
from llm4rec.environment import environment
from llm4rec.io import read_json, write_json, write_text
from llm4rec.params import moved_to_today
from llm4rec.stats import paired_t_test


@dataclass
class Recorded:
    """A finished run as recorded: run.json, metrics.json, the folder it lives in (None from
    MLflow), and the folder with its rankings and per-user metrics (the run folder, or MLflow's
    downloaded artifacts)."""

    run: dict
    metrics: dict
    folder: Path | None
    files: Path | None = None


@dataclass
class ScratchGrid:
    """The grid config being rebuilt: the run's dataset, its model and whatever it consumed."""

    raw: dict[str, Any]
    # (dataset, artifact, key) to build first
    artifacts: list[tuple[str, str, str]] = field(default_factory=list)
    # (dataset, model, seed) to train first, in dependency order
    upstream: list[tuple[str, str, int]] = field(default_factory=list)


def load_recorded(target: str, tracking_uri: str) -> Recorded:
    folder = Path(target)
    if folder.is_dir():
        for name in (layout.RUN_JSON, layout.METRICS):
            if not (folder / name).is_file():
                raise DataError(
                    f"reproduce: {folder / name} not found; RUN must be a finished, evaluated run "
                    "folder (<results>/<grid>/runs/<dataset>/<model>/seed<N>) or an MLflow run id"
                )
        return Recorded(
            read_json(folder / layout.RUN_JSON),
            read_json(folder / layout.METRICS),
            folder.resolve(),
            folder.resolve(),
        )
    if len(target) == 32 and all(c in "0123456789abcdef" for c in target):
        from llm4rec.tracking import download_run_record

        files = download_run_record(
            tracking_uri, target, Path(tempfile.mkdtemp(prefix="llm4rec-mlflow-"))
        )
        return Recorded(
            read_json(files[layout.RUN_JSON]),
            read_json(files[layout.METRICS]),
            None,
            files[layout.RUN_JSON].parent,
        )
    raise DataError(
        f"reproduce: '{target}' is neither a run folder nor an MLflow run id (32 hex characters)"
    )


def _entry(run: dict, threads: int | None) -> dict[str, Any]:
    """The grid's model entry that gives back this run config (and so its config hash)."""
    config = run["run"]
    entry: dict[str, Any] = {
        "name": config["model"],
        "params": moved_to_today(config["params"]),  # a record older than a key's move
        "seeds": [config["seed"]],
    }
    if threads:
        entry["threads"] = threads
    if "evaluation" in config:
        entry["evaluation"] = {
            k: config["evaluation"][k] for k in ("cutoffs", "test_users", "valid_users")
        }
    return entry


def scratch_grid(recorded: Recorded, results: Path) -> ScratchGrid:
    config = recorded.run["run"]
    dataset = config["dataset"]
    evaluation: dict[str, Any] = {"cutoffs": config["cutoffs"]}
    if "evaluation" in config:
        evaluation["sample_seed"] = config["evaluation"]["sample_seed"]
    if "selection_metric" in config:
        evaluation["selection_metric"] = config["selection_metric"]
    steer = recorded.metrics.get("steer")
    if steer:  # the steerability the run was scored with (metrics.json records it)
        evaluation["steer"] = {
            key: steer[key]
            for key in (
                "templates",
                "cutoffs",
                "filter_depth",
                "counterfactual_seed",
                "genres_field",
                "year_field",
            )
            if key in steer
        }
    grid = ScratchGrid(
        {
            "name": config["grid"],
            "results_dir": str(results),
            "reports_dir": str(results.parent / "reports"),
            "device": recorded.run.get("device", "cpu"),
            "seeds": [config["seed"]],
            "evaluation": evaluation,
            "datasets": {dataset: config["dataset_config"]},
            "models": [],
        }
    )
    _add_model(grid, recorded, recorded.folder)
    _add_parents(grid, recorded.folder, dataset, int(config["seed"]))
    return grid


def _listed(grid: ScratchGrid, model: str) -> bool:
    return any(m["name"] == model for m in grid.raw["models"])


def _add_parents(grid: ScratchGrid, folder: Path | None, dataset: str, seed: int) -> None:
    """A variant's parent (and its parent, ...) as listed-only entries: the grid validates a
    variant against its parent, and a variant's user sample is drawn within the parent's. They
    are not run (their recorded configs are enough); what the run itself consumes is rebuilt (or
    copied, --upstream recorded) as before."""
    from llm4rec.models import MODELS

    pending = [m["name"] for m in grid.raw["models"]]
    while pending:
        parent = MODELS[pending.pop()].parent
        if parent is None or _listed(grid, parent):
            continue
        if folder is None:
            raise DataError(
                f"reproduce: the run is a variant of {parent}; listing it needs the run folder "
                "(give RUN as a folder)"
            )
        runs = layout.grid_dir_of_run(folder) / "runs" / dataset / parent
        found = sorted(runs.glob(f"seed*/{layout.RUN_JSON}"))
        if not found:
            raise DataError(
                f"reproduce: the run is a variant of {parent}, whose run folders under {runs} "
                "are gone (its recorded config is needed)"
            )
        same = [f for f in found if f.parent.name == layout.seed_folder(seed)]
        parent_folder = (same or found)[0].parent
        record = Recorded(read_json(parent_folder / layout.RUN_JSON), {}, parent_folder)
        _add_model(grid, record, parent_folder, listed_only=True)
        pending = [m["name"] for m in grid.raw["models"]]


def _add_model(
    grid: ScratchGrid, recorded: Recorded, folder: Path | None, listed_only: bool = False
) -> None:
    """The run's grid entry, with what it consumed: upstream runs (trained first, or only listed
    when this entry is) and artifacts; a run on another dataset (a zero-shot transfer's source)
    brings its dataset along as `role: source`."""
    config = recorded.run["run"]
    dataset = config["dataset"]
    grid.raw["datasets"].setdefault(dataset, config["dataset_config"] | {"role": "source"})
    entry = _entry(recorded.run, recorded.run.get("environment", {}).get("torch_threads"))
    inputs = config.get("inputs", {})
    if inputs and folder is None:
        raise DataError(
            f"reproduce: {config['model']}/{dataset}/seed{config['seed']} consumes "
            f"{', '.join(inputs)}; rebuilding those needs the run folder (give RUN as a folder)"
        )
    if inputs:
        grid_dir = layout.grid_dir_of_run(folder)
        entry["inputs"] = {}
    for slot, source in inputs.items():
        if "run" in source:
            upstream_dataset = source.get("dataset", dataset)
            upstream_folder = layout.run_dir(
                grid_dir, upstream_dataset, source["run"], source["seed"]
            )
            if not (upstream_folder / layout.RUN_JSON).is_file():
                raise DataError(
                    f"reproduce: {folder} consumed '{slot}' from {upstream_folder}, whose "
                    "run.json is gone"
                )
            upstream = Recorded(read_json(upstream_folder / layout.RUN_JSON), {}, upstream_folder)
            if not _listed(grid, source["run"]):
                _add_model(grid, upstream, upstream_folder, listed_only)
                if not listed_only:
                    grid.upstream.append((upstream_dataset, source["run"], int(source["seed"])))
            entry["inputs"][slot] = {"run": source["run"], "seed": source["seed"]} | (
                {"dataset": source["dataset"]} if "dataset" in source else {}
            )
        else:
            marker = (
                layout.artifact_dir(grid_dir, dataset, source["artifact"], source["config_hash"])
                / layout.ARTIFACT_JSON
            )
            if not marker.is_file():
                raise DataError(
                    f"reproduce: {folder} consumed '{slot}' from artifact {marker.parent}, whose "
                    "artifact.json is gone"
                )
            entry["inputs"][slot] = {
                "artifact": source["artifact"],
                "params": read_json(marker)["params"],
            }
            if not listed_only:
                grid.artifacts.append((dataset, source["artifact"], source["config_hash"]))
    grid.raw["models"].append(entry)


# Scores that agree within this relative difference are the same number up to float noise: 256 units
# in the last place of fp32 (2^-24 each). Re-ranking the same weights on another instruction set or
# thread count moves LLM log-probabilities by a few ulps (tests/test_reproduce.py measures it under
# ATEN_CPU_CAPABILITY); a weight that moved in training moves them by orders of magnitude more.
SCORE_RTOL = 256 * 2.0**-24
SCORE_ATOL = 1e-9
VERDICTS = ("bit-identical", "within float noise", "different")


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


def user_ranking_verdict(
    recorded: pd.DataFrame,
    rebuilt: pd.DataFrame,
    rtol: float = SCORE_RTOL,
    atol: float = SCORE_ATOL,
) -> str:
    """One user's two top-K lists (rank order, with scores): bit-identical, within float noise
    (rank-wise scores close, every common item's two scores close, items that only one list has
    scored within the tolerance of the other list's last score: a tie at depth K), or different."""
    a_items, b_items = (
        recorded["item_id"].astype(str).to_numpy(),
        rebuilt["item_id"].astype(str).to_numpy(),
    )
    a_scores, b_scores = (
        recorded["score"].to_numpy(np.float64),
        rebuilt["score"].to_numpy(np.float64),
    )
    if np.array_equal(a_items, b_items) and np.array_equal(a_scores, b_scores):
        return VERDICTS[0]
    if len(a_items) != len(b_items) or not np.allclose(a_scores, b_scores, rtol=rtol, atol=atol):
        return VERDICTS[2]
    a_score, b_score = (
        dict(zip(a_items, a_scores, strict=True)),
        dict(zip(b_items, b_scores, strict=True)),
    )
    for item, score in a_score.items():
        # missing from the other list: it must tie with its last item
        other = b_score.get(item, b_scores[-1])
        if not np.isclose(score, other, rtol=rtol, atol=atol):
            return VERDICTS[2]
    for item in set(b_score) - set(a_score):
        if not np.isclose(b_score[item], a_scores[-1], rtol=rtol, atol=atol):
            return VERDICTS[2]
    return VERDICTS[1]


def ranking_verdicts(recorded: pd.DataFrame, rebuilt: pd.DataFrame) -> dict[str, str]:
    """user -> verdict (`user_ranking_verdict`) over the users of either file; a user only one
    has: different."""
    a = {str(u): g.sort_values("rank") for u, g in recorded.groupby("user_id", sort=True)}
    b = {str(u): g.sort_values("rank") for u, g in rebuilt.groupby("user_id", sort=True)}
    return {
        u: user_ranking_verdict(a[u], b[u]) if u in a and u in b else VERDICTS[2]
        for u in sorted(set(a) | set(b))
    }


@dataclass
class PhaseEvidence:
    """What one phase's files say: each user's ranking verdict, and both per-user metric frames."""

    users: dict[str, str]
    recorded: pd.DataFrame
    rebuilt: pd.DataFrame


def phase_evidence(recorded_folder: Path | None, rebuilt_folder: Path) -> dict[str, PhaseEvidence]:
    """Per phase, from the recorded and the rebuilt run folders (nothing where the record has no
    files)."""
    out = {}
    for phase in layout.PHASES:
        names = [layout.rankings(phase), layout.per_user(phase)]
        if recorded_folder is None or not all((recorded_folder / n).is_file() for n in names):
            continue
        old, new = (pd.read_parquet(f / names[0]) for f in (recorded_folder, rebuilt_folder))
        per_user = [
            pd.read_parquet(f / names[1])
            .assign(user_id=lambda d: d["user_id"].astype(str))
            .set_index("user_id")
            for f in (recorded_folder, rebuilt_folder)
        ]
        out[phase] = PhaseEvidence(ranking_verdicts(old, new), *per_user)
    return out


def metric_verdict(
    metric: str, diff: float, evidence: Mapping[str, PhaseEvidence]
) -> tuple[str, float | None]:
    """(verdict, paired t-test p-value over users or None) of one `phase_metric` (see the module
    doc)."""
    if diff == 0:
        return VERDICTS[0], None
    phase, name = metric.split("_", 1)
    found = evidence.get(phase)
    if found is None or not math.isfinite(diff):
        return VERDICTS[2], None
    if name in found.recorded.columns and name in found.rebuilt.columns:
        old, new = found.recorded[name].align(found.rebuilt[name], join="inner")
        changed = old.index[(old.to_numpy() != new.to_numpy())]
        p_value = _paired_p(old.to_numpy(), new.to_numpy())
        noise = len(changed) > 0 and all(found.users.get(u) == VERDICTS[1] for u in changed)
        return (VERDICTS[1] if noise else VERDICTS[2]), p_value
    # an aggregate (coverage, popularity): noise when some ranking moved and none beyond noise
    verdicts = set(found.users.values())
    return (
        VERDICTS[1] if VERDICTS[1] in verdicts and VERDICTS[2] not in verdicts else VERDICTS[2]
    ), None


def _paired_p(old: np.ndarray, new: np.ndarray) -> float | None:
    """The paired t-test's p-value over users (llm4rec.stats); None when no user's value changed."""
    if len(old) < 2 or np.array_equal(old, new):
        return None
    return paired_t_test(new, old)


ENVIRONMENT_KEYS = (
    "git_commit",
    "python",
    "platform",
    "cpu_model",
    "cpu_capability",
    "cpu_flags",
    "cpu_count",
    "torch_threads",
    "blas",
    "cuda",
    "cuda_version",
)


def environment_differences(recorded: dict, now: dict) -> list[tuple[str, str, str]]:
    """(what, recorded, now) for the git commit, package versions, CPU model and instruction set,
    BLAS, threads and CUDA that differ."""
    rows = [
        (k, str(recorded.get(k)), str(now.get(k)))
        for k in ENVIRONMENT_KEYS
        if str(recorded.get(k)) != str(now.get(k))
    ]
    before, after = recorded.get("packages", {}), now.get("packages", {})
    rows += [
        (f"package {p}", str(before.get(p)), str(after.get(p)))
        for p in sorted(set(before) | set(after))
        if before.get(p) != after.get(p)
    ]
    return rows


def reproduce(
    target: str,
    scratch: Path | None = None,
    tolerance: float | None = None,
    tracking_uri: str = "",
    upstream: str = "rebuild",
) -> int:
    """Rebuild RUN in `scratch`, print the differences, return the exit status (0: within
    tolerance). upstream: "rebuild" what the run consumed from its own records (default), or
    "recorded": consume the recorded upstream runs' exports and artifacts as they are (checked
    against their records' sha256), to reproduce a grid run by run without retraining each
    consumer's upstream again."""
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
        raise ConfigError(
            f"reproduce {label}: the rebuilt config {scratch / 'grid.yaml'} hashes to "
            f"{rebuilt_hash}, the record says {recorded.run['config_hash']}; the record was "
            "written by another version of the config loader"
        )
    if tolerance is None:
        tolerance = 0.0 if grid.device == "cpu" else 1e-4
    print(f"[llm4rec] reproducing {label} (config {rebuilt_hash}) in {scratch}", flush=True)
    split = prepare_dataset(grid, dataset)
    for other in grid.datasets:  # a transferred-from run's dataset
        if other != dataset:
            prepare_dataset(grid, other)
    if split.meta["checksums"] != recorded.run["split_checksums"]:
        print(
            "[llm4rec] note: the rebuilt split's checksums differ from the record's: "
            f"{split.meta['checksums']} vs {recorded.run['split_checksums']}",
            flush=True,
        )
    if upstream not in ("rebuild", "recorded"):
        raise ConfigError(f"reproduce: --upstream '{upstream}' is not rebuild or recorded")
    if upstream == "recorded" and (grid_spec.artifacts or grid_spec.upstream):
        _copy_recorded_upstream(recorded, grid_spec, grid)
    else:
        for artifact_dataset, name, key in grid_spec.artifacts:
            build_artifact(grid, artifact_dataset, name, key)
        for upstream_dataset, upstream_model, upstream_seed in grid_spec.upstream:
            train_and_rank(grid, upstream_dataset, upstream_model, upstream_seed)
    train_and_rank(grid, dataset, model, seed)
    rebuilt = evaluate_run(grid, dataset, model, seed)
    now = read_json(grid.run_dir(dataset, model, seed) / layout.RUN_JSON)

    metrics = metric_differences(recorded.metrics, rebuilt)
    evidence = phase_evidence(recorded.files, grid.run_dir(dataset, model, seed))
    judged = [(*row, *metric_verdict(row[0], row[3], evidence)) for row in metrics]
    env = environment_differences(
        recorded.run.get("environment", {}), now.get("environment", environment())
    )
    for key in ("device", "determinism"):
        if recorded.run.get(key) != now.get(key):
            env.insert(0, (key, str(recorded.run.get(key)), str(now.get(key))))
    beyond = [row for row in judged if row[4] == VERDICTS[2] and row[3] > tolerance]
    counts = {v: sum(row[4] == v for row in judged) for v in VERDICTS}
    weights = _weights_line(recorded.run.get("weights_sha256"), now.get("weights_sha256"))
    lines = [
        f"reproduce {label}: {counts[VERDICTS[0]]} bit-identical, "
        f"{counts[VERDICTS[1]]} within float noise, {counts[VERDICTS[2]]} different of "
        f"{len(judged)} metrics ({len(beyond)} beyond tolerance {tolerance:g})",
        f"  weights: {weights}",
    ]
    for phase, found in evidence.items():
        users = {v: sum(x == v for x in found.users.values()) for v in VERDICTS}
        lines.append(
            f"  {phase} rankings: {users[VERDICTS[0]]} users bit-identical, "
            f"{users[VERDICTS[1]]} within float noise, {users[VERDICTS[2]]} different"
        )
    lines.append(f"  {'metric':28s} {'recorded':>12s} {'reproduced':>12s} {'|diff|':>10s}  verdict")
    for name, old, new, d, verdict, p in judged:
        mark = "!" if verdict == VERDICTS[2] and d > tolerance else " "
        paired = f" (paired t over users: p = {p:.3g})" if p is not None else ""
        lines.append(f"{mark} {name:28s} {old:12.6f} {new:12.6f} {d:10.3g}  {verdict}{paired}")
    lines.append(
        "environment: "
        + ("same git commit, packages, device and threads" if not env else "differs")
    )
    lines += [f"  {what}: {old} -> {new}" for what, old, new in env]
    print("\n".join(lines), flush=True)
    keys = ("metric", "recorded", "reproduced", "abs_diff", "verdict", "paired_p")
    write_json(
        scratch / "reproduce.json",
        {
            "run": label,
            "config_hash": rebuilt_hash,
            "tolerance": tolerance,
            "score_rtol": SCORE_RTOL,
            "weights": weights,
            "verdicts": counts,
            "metrics": [dict(zip(keys, r, strict=True)) for r in judged],
            "environment": [dict(zip(("what", "recorded", "now"), r, strict=True)) for r in env],
            "within_tolerance": not beyond,
        },
    )
    return 1 if beyond else 0


def _copy_recorded_upstream(recorded: Recorded, grid_spec: ScratchGrid, grid) -> None:
    """Copy what the run consumed (artifact folders; upstream runs' run.json and exports) from the
    recorded grid into the scratch grid; the consumer's input check then compares every file with
    its record."""
    import shutil

    if recorded.folder is None:
        raise DataError(
            "reproduce --upstream recorded: needs RUN as a run folder (the recorded upstream lives "
            "beside it)"
        )
    source_grid = layout.grid_dir_of_run(recorded.folder)
    for dataset, name, key in grid_spec.artifacts:
        shutil.copytree(
            layout.artifact_dir(source_grid, dataset, name, key),
            layout.artifact_dir(grid.grid_dir, dataset, name, key),
            dirs_exist_ok=True,
        )
    for dataset, upstream_model, upstream_seed in grid_spec.upstream:
        source = layout.run_dir(source_grid, dataset, upstream_model, upstream_seed)
        target = layout.run_dir(grid.grid_dir, dataset, upstream_model, upstream_seed)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / layout.RUN_JSON, target / layout.RUN_JSON)
        shutil.copytree(source / layout.EXPORTS, target / layout.EXPORTS, dirs_exist_ok=True)
    print(
        "[llm4rec] consuming the recorded upstream as it is: "
        f"{[f'{d}/{n}/{k}' for d, n, k in grid_spec.artifacts]} "
        f"{[f'{d}/{m}/seed{s}' for d, m, s in grid_spec.upstream]}",
        flush=True,
    )


def _weights_line(recorded: str | None, now: str | None) -> str:
    if not recorded or not now:
        return "no digest recorded" if now else "no torch weights"
    return (
        f"bit-identical (sha256 {now[:12]})"
        if recorded == now
        else f"differ (sha256 {recorded[:12]} -> {now[:12]})"
    )
