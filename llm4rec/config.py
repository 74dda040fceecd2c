"""The one config loader: read a grid YAML, validate it, and resolve per-run configs.

A grid is datasets x models x seeds (see benchmarks/default.yaml). Validation happens before
anything runs; every error names the file, the key path and what was expected, e.g.
``benchmarks/default.yaml: models[3].name 'sasrek' is not a known model (known: ...)``.
The defaults of the keys a grid leaves out are llm4rec/schema.yaml's, filled in on loading.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llm4rec import layout, schema
from llm4rec.data.sources import BUILTIN_SOURCES
from llm4rec.evaluation.metrics import SELECTION_METRIC, metric_cutoff
from llm4rec.io import stable_hash
from llm4rec.models import (
    ARTIFACTS,
    MODELS,
    BuildSpec,
    ResolvedInput,
    as_data,
    check_params,
    deep_merge,
)
from llm4rec.params import ParamsError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "benchmarks" / "default.yaml"


def local_store_uri(results_dir: Path) -> str:
    """The SQLite MLflow store a grid writes when no tracking server is named:
    <results_dir>/mlflow.db."""
    return f"sqlite:///{(results_dir / layout.LOCAL_STORE).resolve()}"


class ConfigError(ValueError):
    """A malformed grid config; the message starts with the file and key path."""


def _key_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


@dataclass(frozen=True)
class InputSource:
    """Where one consumed input of one run comes from: another run of the grid (same dataset) or
    an artifact; `folder` holds its files, `config_hash` identifies the upstream configuration."""

    slot: str
    kind: str  # run | artifact
    name: str  # the upstream model, or the artifact
    seed: int | None
    folder: Path
    marker: Path  # the upstream's declared output the consumer depends on
    files: tuple[str, ...]
    config_hash: str
    params: dict[str, Any]
    dataset: str | None = None  # another dataset's run (zero-shot transfer); None: the same one

    def describe(self) -> dict[str, Any]:
        """What goes into the consumer's run config (and so its hash)."""
        return {
            self.kind: self.name,
            **({"dataset": self.dataset} if self.dataset is not None else {}),
            "seed": self.seed,
            "config_hash": self.config_hash,
            "files": list(self.files),
        }


@dataclass(frozen=True)
class RunSpec:
    """One grid cell, resolved once (`Grid.run_spec`): the row's parsed config, what it consumes,
    how it is evaluated and where it writes. `record` is everything that determines the run's
    result, as run.json's `run` writes it (tracking logs it from there); `hash` (its stable hash)
    is the run's config hash, which the rules and `reproduce` read. The runner builds the model
    from it on the job's device (not part of the cell: `device: auto` is settled where it runs)."""

    dataset: str
    model: str
    seed: int
    run_dir: Path
    config: Any  # the row's config dataclass (a library-configured row: its checked params)
    sources: dict[str, InputSource]
    evaluation: dict[str, Any]  # cutoffs and evaluated users (`Grid.model_evaluation`)
    selection: str  # the validation metric that picks epochs and checkpoints
    threads: int
    record: dict[str, Any]
    hash: str

    def build_spec(self, device: str, inputs: dict[str, ResolvedInput]) -> BuildSpec:
        """What the row's factory builds from, on `device` and `inputs` (the sources, checked: the
        runner's `resolve_inputs`)."""
        return BuildSpec(self.model, self.config, self.seed, device, self.selection, inputs)


@dataclass(frozen=True)
class Grid:
    """A validated grid config with the schema's defaults filled in."""

    path: Path
    raw: dict[str, Any]

    @property
    def name(self) -> str:
        return self.raw["name"]

    @property
    def results_dir(self) -> Path:
        return Path(self.raw["results_dir"])

    @property
    def grid_dir(self) -> Path:
        return self.results_dir / self.name

    @property
    def reports_dir(self) -> Path:
        return Path(self.raw["reports_dir"])

    @property
    def seeds(self) -> list[int]:
        return list(self.raw["seeds"])

    @property
    def cutoffs(self) -> list[int]:
        return sorted(self.raw["evaluation"]["cutoffs"])

    @property
    def datasets(self) -> list[str]:
        return list(self.raw["datasets"])

    @property
    def models(self) -> list[str]:
        return [m["name"] for m in self.raw["models"]]

    @property
    def device(self) -> str:
        device = self.raw["device"]
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        return device

    @property
    def threads(self) -> int:
        return int(self.raw["threads"])

    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI wins, then tracking.uri, then a SQLite file under results_dir."""
        uri = os.environ.get("MLFLOW_TRACKING_URI") or self.raw["tracking"]["uri"]
        return uri or local_store_uri(self.results_dir)

    @property
    def experiment(self) -> str:
        return self.raw["tracking"].get("experiment", f"llm4rec-{self.name}")

    def report_options(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw["report"])

    def dataset_config(self, dataset: str) -> dict[str, Any]:
        return copy.deepcopy(self.raw["datasets"][dataset])

    def model_entry(self, model: str) -> dict[str, Any]:
        return next(m for m in self.raw["models"] if m["name"] == model)

    def model_seeds(self, model: str) -> list[int]:
        """The grid's seeds, or the model entry's own (e.g. one seed for a costly LLM on CPU)."""
        return list(self.model_entry(model).get("seeds", self.seeds))

    def main_seeds(self, model: str) -> list[int]:
        """The seeds the main job runs (`main_seeds`, default every seed of the model); the rest
        run with the ablations target, which completes the grid."""
        return list(self.model_entry(model).get("main_seeds", self.model_seeds(model)))

    def model_datasets(self, model: str) -> list[str]:
        """The evaluated datasets the model runs on: the entry's `datasets`, or every one."""
        only = self.model_entry(model).get("datasets")
        return [d for d in self.evaluated_datasets if only is None or d in only]

    def model_threads(self, model: str) -> int:
        return int(self.model_entry(model).get("threads", self.threads))

    def model_evaluation(self, model: str) -> dict[str, Any]:
        """Cutoffs and evaluated users of one model: the grid's, unless its entry narrows them
        (cutoffs: a subset of the grid's, ranking depth = their max; test_users / valid_users: a
        seeded uniform sample of that many users, the same users for every model that asks for
        the same number; null = all)."""
        own = self.model_entry(model).get("evaluation", {})
        return {
            "cutoffs": sorted(own.get("cutoffs", self.cutoffs)),
            "test_users": own.get("test_users"),
            "valid_users": own.get("valid_users"),
            "sample_seed": self.raw["evaluation"]["sample_seed"],
        }

    @property
    def steer_settings(self) -> dict[str, Any]:
        """`evaluation.steer` as the grid writes it ({}: none); what the evaluate rule hashes, so a
        changed template re-scores the runs."""
        return self.raw["evaluation"].get("steer") or {}

    def steer(self) -> dict[str, Any] | None:
        """The steerability evaluation (`evaluation.steer`): {templates: {name: RequestTemplate},
        cutoffs, filter_depth, counterfactual_seed}, or None when the grid asks for none."""
        from llm4rec.data.requests import RequestTemplate
        from llm4rec.evaluation.steerability import FILTER_DEPTH

        cfg = self.steer_settings
        if not cfg:
            return None
        fields = {
            "genres_field": cfg.get("genres_field", "genres"),
            "year_field": cfg.get("year_field", "year"),
        }
        return {
            "templates": {
                name: RequestTemplate(wording, **fields)
                for name, wording in cfg["templates"].items()
            },
            "cutoffs": sorted(cfg.get("cutoffs", [10])),
            "filter_depth": int(cfg.get("filter_depth", FILTER_DEPTH)),
            "counterfactual_seed": int(cfg.get("counterfactual_seed", 0)),
        }

    def selection_metric(self, model: str) -> str:
        """The validation metric that picks epochs and checkpoints (grid's, or the entry's own)."""
        own = self.model_entry(model).get("evaluation", {}).get("selection_metric")
        return own or self.raw["evaluation"].get("selection_metric", SELECTION_METRIC)

    def model_inputs(self, model: str) -> dict[str, dict[str, Any]]:
        """{slot: {run: MODEL[, seed: N]} | {artifact: NAME, params: {...}}}: the registry's
        defaults, overridden per slot by the grid entry's `inputs`."""
        own = self.model_entry(model).get("inputs", {})
        return {
            slot: dict(own.get(slot) or declared.default)
            for slot, declared in MODELS[model].inputs.items()
        }

    def input_sources(self, dataset: str, model: str, seed: int) -> dict[str, InputSource]:
        """Resolve what one run consumes to upstream folders, files and config hashes."""
        out = {}
        for slot, source in self.model_inputs(model).items():
            across = None
            if "run" in source:  # another run's exports folder, of its config hash
                name, upstream_seed = source["run"], int(source.get("seed", seed))
                upstream = source.get("dataset", dataset)  # another dataset: zero-shot transfer
                across = upstream if upstream != dataset else None
                folder = self.run_dir(upstream, name, upstream_seed) / layout.EXPORTS
                where = ("run", name, upstream_seed, folder, folder)
                identity = (self.run_hash(upstream, name, upstream_seed), {})
            else:  # an artifact's folder, keyed by its configuration (and seed, where per-seed)
                name, params = source["artifact"], source.get("params", {})
                artifact_seed = seed if ARTIFACTS[name].per_seed else None
                key = self.artifact_key(dataset, name, params, artifact_seed)
                folder = self.artifact_dir(dataset, name, key)
                where = ("artifact", name, artifact_seed, folder, folder / layout.ARTIFACT_JSON)
                identity = (key, params)
            files = MODELS[model].inputs[slot].files
            out[slot] = InputSource(slot, *where, files, *identity, across)
        return out

    def source_runs(self, kind: str = "all") -> list[tuple[str, str, int]]:
        """The runs on `role: source` datasets that the kind's runs consume, directly or through
        other runs (zero-shot transfer: a model trained on another dataset)."""
        found: set[tuple[str, str, int]] = set()
        pending = list(self.runs(kind))
        while pending:
            dataset, model, seed = pending.pop()
            for source in self.input_sources(dataset, model, seed).values():
                cell = (source.dataset or dataset, source.name, source.seed)
                if source.kind == "run" and cell[0] not in self.evaluated_datasets:
                    if cell not in found:
                        found.add(cell)
                        pending.append(cell)
        return sorted(found)

    def artifact_key(
        self, dataset: str, name: str, params: dict[str, Any], seed: int | None
    ) -> str:
        """The artifact's folder name: a hash of its dataset config, seed and resolved params
        (defaults filled in, so spelling a default out does not rebuild it)."""
        resolved = check_params(ARTIFACTS[name], params)
        resolved = dataclasses.asdict(resolved) if dataclasses.is_dataclass(resolved) else params
        return stable_hash(
            {
                "artifact": name,
                "dataset_config": self.dataset_config(dataset),
                "params": resolved,
                "seed": seed,
            }
        )

    def artifact_dir(self, dataset: str, name: str, key: str) -> Path:
        return layout.artifact_dir(self.grid_dir, dataset, name, key)

    def artifact_resources(self, dataset: str, name: str, key: str) -> dict[str, int]:
        """The job resources of one artifact (the `artifact` rule's, SLURM's request): the
        largest each input naming it asks for (`resources` beside its `params`), where none
        does ARTIFACT_RESOURCES' defaults (an LLM encoder needs a GPU: say so in the grid)."""
        wanted: dict[str, int] = {}
        for model in self.models:
            for source in self.model_inputs(model).values():
                if source.get("artifact") != name or not source.get("resources"):
                    continue
                seeds = [None] if not ARTIFACTS[name].per_seed else self.model_seeds(model)
                keys = {
                    self.artifact_key(dataset, name, source.get("params", {}), s) for s in seeds
                }
                if key in keys:
                    for field_, value in source["resources"].items():
                        wanted[field_] = max(wanted.get(field_, value), value)
        return ARTIFACT_RESOURCES | wanted

    def artifacts(self) -> dict[tuple[str, str, str], InputSource]:
        """Every artifact the grid's runs consume, by (dataset, artifact, key)."""
        found = {}
        for dataset, model, seed in self.runs() + self.source_runs():
            for source in self.input_sources(dataset, model, seed).values():
                if source.kind == "artifact":
                    found[(dataset, source.name, source.config_hash)] = source
        return found

    def model_params(self, model: str, dataset: str) -> dict[str, Any]:
        entry = self.model_entry(model)
        return deep_merge(entry.get("params", {}), entry.get("dataset_params", {}).get(dataset, {}))

    def split_dir(self, dataset: str) -> Path:
        return layout.split_dir(self.grid_dir, dataset)

    def run_dir(self, dataset: str, model: str, seed: int) -> Path:
        return layout.run_dir(self.grid_dir, dataset, model, seed)

    def run_spec(self, dataset: str, model: str, seed: int) -> RunSpec:
        """One cell resolved: the row's params parsed once (defaults and variant filled in), its
        inputs resolved to upstream folders and hashes, its evaluation, and the record and hash
        they make."""
        config = check_params(MODELS[model], self.model_params(model, dataset))
        sources = self.input_sources(dataset, model, seed)
        evaluation, selection = self.model_evaluation(model), self.selection_metric(model)
        record = {
            "grid": self.name,
            "dataset": dataset,
            "dataset_config": self.dataset_config(dataset),
            "model": model,
            "paradigm": MODELS[model].paradigm,
            # defaults and variant filled in
            "params": as_data(config),
            "seed": seed,
            "cutoffs": self.cutoffs,
            **({"evaluation": evaluation} if "evaluation" in self.model_entry(model) else {}),
            # only when it differs from the default, so grids run before it existed keep their
            # hashes
            **({"selection_metric": selection} if selection != SELECTION_METRIC else {}),
            # the upstream runs' config hashes: a changed upstream changes (and reruns) the consumer
            **(
                {"inputs": {slot: s.describe() for slot, s in sources.items()}}
                if MODELS[model].inputs
                else {}
            ),
        }
        return RunSpec(
            dataset,
            model,
            seed,
            self.run_dir(dataset, model, seed),
            config,
            sources,
            evaluation,
            selection,
            self.model_threads(model),
            record,
            stable_hash(record),
        )

    def run_config(self, dataset: str, model: str, seed: int) -> dict[str, Any]:
        """Everything that determines one run's result (its hash is the run's config hash)."""
        return self.run_spec(dataset, model, seed).record

    def run_hash(self, dataset: str, model: str, seed: int) -> str:
        return self.run_spec(dataset, model, seed).hash

    def report_dir(self, kind: str = "main") -> Path:
        """Where a report kind is written: reports_dir, or reports_dir/ablations."""
        return self.reports_dir if kind == "main" else self.reports_dir / kind

    def report_marker(self, kind: str = "main") -> Path:
        """The report stage's record of its MLflow summary run (the Snakemake target)."""
        return layout.report_marker(self.grid_dir, kind)

    def runs(self, kind: str = "all") -> list[tuple[str, str, int]]:
        """The grid's (dataset, model, seed) cells. `main`: every model that is not a registry
        variant, at its `main_seeds` (the main job); `ablations`: the variants, the parents they
        are compared with, the baselines (finished by the main job, reused) and every model's
        seeds beyond its `main_seeds`; `all`: both."""
        return [
            (d, m, s)
            for d in self.evaluated_datasets
            for m in self.kind_models(kind)
            if d in self.model_datasets(m)
            for s in (self.main_seeds(m) if kind == "main" else self.model_seeds(m))
        ]

    @property
    def evaluated_datasets(self) -> list[str]:
        """The datasets the grid's models run and are reported on: all but `role: source` ones
        (which only hold the runs other datasets consume, `source_runs`)."""
        return [d for d in self.datasets if self.raw["datasets"][d].get("role") != "source"]

    def kind_models(self, kind: str) -> list[str]:
        variants = [m for m in self.models if MODELS[m].parent is not None]
        if kind == "main":
            return [m for m in self.models if m not in variants]
        if kind == "ablations":
            # each variant is compared with its parent and with the best baseline
            parents = {MODELS[m].parent for m in variants}
            unfinished = {m for m in self.models if self.main_seeds(m) != self.model_seeds(m)}
            return [
                m
                for m in self.models
                if m in variants
                or m in parents
                or m in unfinished
                or MODELS[m].paradigm == "baseline"
            ]
        if kind == "all":
            return self.models
        raise ValueError(f"unknown run kind {kind!r} (known: {', '.join(RUN_KINDS)})")


RUN_KINDS = ("main", "ablations", "all")


# A dataset's split keys as the schema declares their defaults.
SPLIT_DEFAULTS = {
    key: declared.get("default")
    for key, declared in schema.schema_node("datasets", "additionalProperties", "split").items()
}


def load_grid(path: str | Path = DEFAULT_CONFIG) -> Grid:
    """Read and validate a grid config; raise ConfigError naming file, key and expectation."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return validate_grid(raw, path)


def validate_grid(given: dict[str, Any], path: Path) -> Grid:
    """The grid `given` (as read from `path`) checked, with the schema's defaults filled in."""
    raw, errors = schema.validate(given)
    if errors:
        err = errors[0]
        where = _key_path(err.absolute_path)
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            message = f"{err.message} (allowed keys: {', '.join(allowed)})"
        else:
            message = err.message
        raise ConfigError(f"{path}: {where}: {message}")
    for i, entry in enumerate(raw["models"]):
        if entry["name"] not in MODELS:
            raise ConfigError(
                f"{path}: models[{i}].name '{entry['name']}' is not a known model "
                f"(known: {', '.join(sorted(MODELS))})"
            )
        cutoffs = raw["evaluation"]["cutoffs"]
        narrowed = set(entry.get("evaluation", {}).get("cutoffs", [])) - set(cutoffs)
        if narrowed:
            raise ConfigError(
                f"{path}: models[{i}].evaluation.cutoffs: {sorted(narrowed)} not in "
                f"evaluation.cutoffs ({sorted(cutoffs)}); a model can only narrow them"
            )
        for dataset in entry.get("dataset_params", {}):
            if dataset not in raw["datasets"]:
                raise ConfigError(
                    f"{path}: models[{i}].dataset_params.{dataset}: no such dataset in datasets "
                    f"(known: {', '.join(raw['datasets'])})"
                )
    names = [m["name"] for m in raw["models"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path}: models: '{dupes[0]}' is listed more than once")
    for name, ds in raw["datasets"].items():
        if ds["source"] not in BUILTIN_SOURCES:
            raise ConfigError(
                f"{path}: datasets.{name}.source '{ds['source']}' is not a known source "
                f"(known: {', '.join(BUILTIN_SOURCES)})"
            )
        if ds["source"] == "atomic" and not ("path" in ds and "atomic_name" in ds):
            raise ConfigError(
                f"{path}: datasets.{name}: source 'atomic' needs 'path' and 'atomic_name'"
            )
        split = ds["split"]
        if split["method"] == "global_temporal" and split["valid_frac"] + split["test_frac"] >= 1:
            raise ConfigError(f"{path}: datasets.{name}.split: valid_frac + test_frac must be < 1")
        if split["method"] == "ratio" and abs(sum(split["ratios"]) - 1) > 1e-9:
            raise ConfigError(
                f"{path}: datasets.{name}.split.ratios {split['ratios']}: train, valid and test "
                "shares must sum to 1"
            )
        stated = given.get("datasets", {}).get(name, {}).get("split", {})
        for key, method in (("test_ties", "leave_one_out"), ("ratios", "ratio")):
            # its default is what a resolved config (run.json, a smoke grid) writes back: no-op
            if stated.get(key, SPLIT_DEFAULTS[key]) != SPLIT_DEFAULTS[key] and (
                split["method"] != method
            ):
                raise ConfigError(
                    f"{path}: datasets.{name}.split.{key} applies to method {method}, not "
                    f"{split['method']}"
                )
    cutoffs = set(raw["evaluation"]["cutoffs"])
    for key in ("metrics", "slice_metric"):
        # as the grid gives them: a default metric beyond its cutoffs is a dash in the tables
        value = given.get("report", {}).get(key)
        if value == schema.defaults("report")[key]:  # a resolved config writes it back: no-op
            continue
        for i, metric in enumerate([value] if isinstance(value, str) else value or []):
            if metric_cutoff(metric) not in cutoffs:
                where = f"report.{key}" + (f"[{i}]" if key == "metrics" else "")
                raise ConfigError(
                    f"{path}: {where} '{metric}' uses a cutoff not in evaluation.cutoffs "
                    f"({sorted(cutoffs)})"
                )
    for model in raw["report"]["display_names"]:
        if model not in MODELS:
            raise ConfigError(
                f"{path}: report.display_names.{model}: not a known model "
                f"(known: {', '.join(sorted(MODELS))})"
            )
    evaluated = [d for d, cfg in raw["datasets"].items() if cfg.get("role") != "source"]
    for i, entry in enumerate(raw["models"]):
        for j, dataset in enumerate(entry.get("datasets", [])):
            if dataset not in evaluated:
                raise ConfigError(
                    f"{path}: models[{i}].datasets[{j}] '{dataset}' is not an evaluated dataset of "
                    f"this grid (evaluated: {', '.join(evaluated)})"
                )
    for i, entry in enumerate(raw["models"]):
        parent = MODELS[entry["name"]].parent
        if parent is not None and parent not in names:
            raise ConfigError(
                f"{path}: models[{i}].name '{entry['name']}' is a variant of '{parent}', which the "
                f"grid does not list (its ablation compares it with {parent}: add {parent})"
            )
    grid = Grid(path, raw)
    for name, wording in raw["evaluation"].get("steer", {}).get("templates", {}).items():
        from llm4rec.data.requests import RequestTemplate

        try:
            RequestTemplate(wording)
        except ValueError as err:
            raise ConfigError(f"{path}: evaluation.steer.templates.{name}: {err}") from err
    templates = raw["evaluation"].get("steer", {}).get("templates", {})
    if templates and raw["report"]["steer_template"] not in templates:
        raise ConfigError(
            f"{path}: report.steer_template '{raw['report']['steer_template']}' is not one of "
            f"evaluation.steer.templates ({', '.join(templates)})"
        )
    for i, entry in enumerate(raw["models"]):
        _check_main_seeds(grid, i, entry)
        _check_gpus(grid, i, entry)
    for i, entry in enumerate(raw["models"]):
        _check_model_params(grid, i, entry)
        _check_model_inputs(grid, i, entry)
    _check_input_cycles(grid)
    _ship_text_samples(grid)
    return grid


def _ship_text_samples(grid: Grid) -> None:
    """Every LLM model's text-retention sample exists and is the pinned text, before any job
    starts; a copy goes with the results (<grid>/text_retention/) for machines that lack its path
    (llm4rec.llm.retention)."""
    from llm4rec.llm.retention import ship_sample

    done = set()
    for i, entry in enumerate(grid.raw["models"]):
        config = check_params(MODELS[entry["name"]], entry.get("params", {}))
        sample = getattr(config, "text_retention", None)
        if sample is None or not sample.enabled or (sample.path, sample.sha256) in done:
            continue
        try:
            ship_sample(sample, grid.grid_dir / layout.TEXT_RETENTION)
        except (OSError, ValueError) as err:
            raise ConfigError(f"{grid.path}: models[{i}] ({entry['name']}): {err}") from err
        done.add((sample.path, sample.sha256))


def _missing_seed(
    source: dict[str, Any], seeds: list[int], produced: list[int]
) -> tuple[int, int] | None:
    """(consumer seed, the producer seed it reads) for the first seed whose input is not among
    `produced` (a source may pin one `seed` for all); None when every one is."""
    for seed in seeds:
        wanted = int(source.get("seed", seed))
        if wanted not in produced:
            return seed, wanted
    return None


# an artifact job's resources where no input names them (profiles/slurm's default-resources)
ARTIFACT_RESOURCES = {"gpu": 0, "mem_mb": 4000, "runtime": 60}


def _check_gpus(grid: Grid, i: int, entry: dict[str, Any]) -> None:
    """`resources.gpu` > 1 only for a model with a multi-process path: elsewhere each of the N
    processes would run the whole job (N identical copies racing on one run folder)."""
    gpus = entry.get("resources", {}).get("gpu", 0)
    if gpus > 1 and not MODELS[entry["name"]].multi_process:
        several = sorted(name for name, spec in MODELS.items() if spec.multi_process)
        raise ConfigError(
            f"{grid.path}: models[{i}].resources.gpu is {gpus}: '{entry['name']}' trains and "
            f"ranks in one process; only the SFT-trained LLM rows ({', '.join(several)}) run on "
            "several GPUs. Set gpu: 1"
        )


def _check_main_seeds(grid: Grid, i: int, entry: dict[str, Any]) -> None:
    """`main_seeds`: a subset of the model's seeds, on a model the main job runs."""
    if "main_seeds" not in entry:
        return
    where, name = f"{grid.path}: models[{i}].main_seeds", entry["name"]
    if MODELS[name].parent is not None:
        raise ConfigError(
            f"{where}: '{name}' is a variant of '{MODELS[name].parent}'; variants run only with "
            "the ablations target, so it has no main-job seeds (leave main_seeds out)"
        )
    extra = sorted(set(entry["main_seeds"]) - set(grid.model_seeds(name)))
    if extra:
        raise ConfigError(
            f"{where}: seed {extra[0]} is not one of the model's seeds {grid.model_seeds(name)}; "
            "main_seeds names the seeds of those the main job runs (the rest run with the "
            "ablations target)"
        )


def _check_model_params(grid: Grid, i: int, entry: dict[str, Any]) -> None:
    """Every model's params (and each dataset's merged params) against its config class."""
    spec = MODELS[entry["name"]]
    for dataset in [None, *entry.get("dataset_params", {})]:
        where = "params" if dataset is None else f"dataset_params.{dataset}"
        try:
            check_params(
                spec,
                entry.get("params", {})
                if dataset is None
                else grid.model_params(spec.name, dataset),
            )
        except ParamsError as err:
            raise ConfigError(f"{grid.path}: models[{i}].{where}: {err}") from err


def _check_model_inputs(grid: Grid, i: int, entry: dict[str, Any]) -> None:
    """Declared inputs: known slots, one known source each, files the source provides, seeds it
    has."""
    spec, where = MODELS[entry["name"]], f"{grid.path}: models[{i}].inputs"
    for slot in entry.get("inputs", {}):
        if slot not in spec.inputs:
            raise ConfigError(
                f"{where}.{slot}: model '{spec.name}' consumes no input '{slot}' "
                f"(its inputs: {', '.join(spec.inputs) or 'none'})"
            )
    for slot, source in grid.model_inputs(spec.name).items():
        if len({"run", "artifact"} & set(source)) != 1:
            raise ConfigError(
                f"{where}.{slot}: give exactly one of 'run: MODEL' or 'artifact: NAME', "
                f"got {source}"
            )
        kind = "run" if "run" in source else "artifact"
        name, allowed = (
            source[kind],
            {"run": ("run", "seed", "dataset"), "artifact": ("artifact", "params", "resources")}[
                kind
            ],
        )
        known = grid.models if kind == "run" else sorted(ARTIFACTS)
        if name not in known:
            raise ConfigError(
                f"{where}.{slot}.{kind}: '{name}' is not "
                f"{'a model of this grid' if kind == 'run' else 'a known artifact'} "
                f"({'models' if kind == 'run' else 'known'}: {', '.join(known)})"
            )
        unknown = sorted(set(source) - set(allowed))
        if unknown:
            raise ConfigError(
                f"{where}.{slot}: unknown key '{unknown[0]}' "
                f"(a {kind} input takes: {', '.join(allowed)})"
            )
        provides = MODELS[name].exports if kind == "run" else ARTIFACTS[name].files
        missing = sorted(set(spec.inputs[slot].files) - set(provides))
        if missing:
            raise ConfigError(
                f"{where}.{slot}.{kind}: '{name}' does not "
                f"{'export' if kind == 'run' else 'provide'} {missing[0]} "
                f"(it writes: {', '.join(provides) or 'nothing'}); "
                f"'{spec.name}' needs {', '.join(spec.inputs[slot].files)}"
            )
        across = spec.inputs[slot].across_datasets
        if kind == "run" and "dataset" in source:
            if source["dataset"] not in grid.datasets:
                raise ConfigError(
                    f"{where}.{slot}.dataset: '{source['dataset']}' is not a dataset of this grid "
                    f"(datasets: {', '.join(grid.datasets)})"
                )
            if across == "no":
                raise ConfigError(
                    f"{where}.{slot}.dataset: '{spec.name}' cannot consume '{slot}' from another "
                    "dataset (its items would not be this dataset's); leave `dataset` out"
                )
        if kind == "run" and "dataset" not in source:
            absent = [
                d for d in grid.model_datasets(spec.name) if d not in grid.model_datasets(name)
            ]
            if absent:
                raise ConfigError(
                    f"{where}.{slot}.run: '{spec.name}' runs on {absent[0]}, where '{name}' does "
                    f"not (its datasets: {', '.join(grid.model_datasets(name))})"
                )
        if kind == "run" and across == "required" and source.get("dataset") is None:
            raise ConfigError(
                f"{where}.{slot}: '{spec.name}' transfers a model trained on another dataset; name "
                f"it with `dataset:` (a dataset of this grid, e.g. one with role: source)"
            )
        if kind == "run":
            gap = _missing_seed(source, grid.model_seeds(spec.name), grid.model_seeds(name))
            if gap:
                raise ConfigError(
                    f"{where}.{slot}: '{spec.name}' seed {gap[0]} consumes '{name}' "
                    f"seed {gap[1]}, which the grid does not run "
                    f"('{name}' seeds: {grid.model_seeds(name)})"
                )
            main_job = MODELS[spec.name].parent is None and "dataset" not in source
            gap = main_job and _missing_seed(
                source, grid.main_seeds(spec.name), grid.main_seeds(name)
            )
            if gap:
                raise ConfigError(
                    f"{where}.{slot}: '{spec.name}' seed {gap[0]} runs in the main job and "
                    f"consumes '{name}' seed {gap[1]}, which its main_seeds "
                    f"{grid.main_seeds(name)} leave to the ablations target (add the seed to "
                    f"'{name}' main_seeds, or drop it from '{spec.name}')"
                )
        else:
            try:
                check_params(ARTIFACTS[name], source.get("params", {}))
            except ParamsError as err:
                raise ConfigError(f"{where}.{slot}.params: {err}") from err
            for key, value in source.get("resources", {}).items():
                if (
                    key not in ARTIFACT_RESOURCES
                    or not isinstance(value, int)
                    or value < (key != "gpu")
                ):
                    raise ConfigError(
                        f"{where}.{slot}.resources.{key}: {value!r}; an artifact job takes "
                        f"{', '.join(ARTIFACT_RESOURCES)} (integers: gpu >= 0, mem_mb and "
                        "runtime in minutes >= 1)"
                    )


def _check_input_cycles(grid: Grid) -> None:
    consumes = {
        m: [s["run"] for s in grid.model_inputs(m).values() if "run" in s] for m in grid.models
    }

    def visit(model: str, chain: list[str]) -> None:
        if model in chain:
            raise ConfigError(
                f"{grid.path}: models: inputs form a cycle: {' -> '.join(chain + [model])}"
            )
        for upstream in consumes[model]:
            visit(upstream, chain + [model])

    for model in grid.models:
        visit(model, [])
