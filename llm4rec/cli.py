"""The `llm4rec` command. Each subcommand is one Snakemake rule's job.

llm4rec validate --config benchmarks/default.yaml
llm4rec prepare  --config C --dataset D
llm4rec fetch    --config C [--check]
llm4rec artifact --config C --dataset D --artifact A --key K
llm4rec train    --config C --dataset D --model M --seed S
llm4rec evaluate --config C --dataset D --model M --seed S
llm4rec track    --config C --dataset D --model M --seed S
llm4rec summarize --config C [metrics.json ...]
llm4rec compare  --config C [RUN_DIR ...] [--mlflow-experiment E --tag model=bpr ...] [--out DIR]
llm4rec report   --config C [RUN_DIR ...] [--mlflow-experiment E ...] [--comparisons FILE]
                 [--kind main|ablations] [--out DIR]
llm4rec results-page --config C [--out docs/results] [--readme README.md]
llm4rec anchors  --config benchmarks/anchors.yaml [--published benchmarks/anchors/published.csv]
llm4rec download amazon-beauty --raw-dir results/raw
llm4rec models
llm4rec tracking-server start|stop [--dir results/tracking-server --port 5000 --pg-port 5433]
llm4rec reproduce RUN [--tolerance 0] [--upstream rebuild|recorded]
llm4rec smoke GRID [--device cpu] [--dtype bf16] [--out results/smoke/<grid>]
llm4rec plan GRID [--profile h100|cpu2] [--out FILE.md]

`main` parses the command line and calls the subcommand's function (the `COMMANDS` table at the
end); each returns the exit status: 0 done, 1 the MLflow UI check failed, 2 an error, explained
on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from llm4rec import layout
from llm4rec.config import DEFAULT_CONFIG, ConfigError, Grid, load_grid
from llm4rec.data.atomic import DataError
from llm4rec.io import WriteError
from llm4rec.tracking import TrackingError
from llm4rec.tracking_server import ServerError

if TYPE_CHECKING:
    from llm4rec.report.build import ReportSpec
    from llm4rec.report.runs import RunRecord


def _grid_cell(parser: argparse.ArgumentParser, with_run: bool = True) -> None:
    parser.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="grid config (benchmarks/*.yaml)"
    )
    parser.add_argument("--dataset", required=True)
    if with_run:
        parser.add_argument("--model", required=True)
        parser.add_argument("--seed", type=int, required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm4rec",
        description="llm4rec-bench: LLM recommenders vs. strong baselines on one protocol",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate a grid config and print its runs")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    _grid_cell(
        sub.add_parser("prepare", help="load, preprocess and split one dataset"), with_run=False
    )
    p = sub.add_parser(
        "fetch",
        help="download the grid's hub assets (backbones, encoders) at their pinned revisions into "
        "the Hugging Face cache, for jobs that run offline (llm4rec.assets)",
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--check", action="store_true", help="only say which are missing (exit 2)")

    p = sub.add_parser(
        "artifact", help="build one artifact the grid's runs consume (the artifact rule)"
    )
    _grid_cell(p, with_run=False)
    p.add_argument("--artifact", required=True)
    p.add_argument("--key", required=True, help="the artifact's config key (its folder name)")
    for name, text in (
        ("train", "train one model and rank top-K"),
        ("evaluate", "score a run's rankings"),
        ("track", "log a finished run to MLflow"),
    ):
        _grid_cell(sub.add_parser(name, help=text))
    p = sub.add_parser("summarize", help="write reports/summary.{md,csv} from metrics.json files")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument(
        "metrics", nargs="*", help="metrics.json files (default: every finished run of the grid)"
    )
    for name, text in (
        ("compare", "paired significance tests between finished runs"),
        ("report", "tables (LaTeX/Markdown/CSV), slices and figures for finished runs"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--config",
            default=str(DEFAULT_CONFIG),
            help="grid config: report options, default runs",
        )
        p.add_argument(
            "runs", nargs="*", help="run folders (default: every finished run of the grid)"
        )
        p.add_argument(
            "--mlflow-experiment", help="read runs from this MLflow experiment instead of folders"
        )
        p.add_argument("--tracking-uri", help="MLflow store (default: the grid's)")
        p.add_argument(
            "--tag",
            action="append",
            default=[],
            help="filter MLflow runs by tag, e.g. --tag dataset=ml-100k",
        )
        p.add_argument(
            "--kind",
            choices=("main", "ablations"),
            default="main",
            help="main: the main job's runs against the best baseline (default); ablations: "
            "the variants against their parents, into <reports_dir>/ablations",
        )
        p.add_argument("--out", help="output folder (default: the kind's reports folder)")
        if name == "compare":
            p.add_argument(
                "--verdicts",
                help="an earlier report's comparisons.csv (the ablation report: the main "
                "report's): a pair it already tested keeps that verdict",
            )
        if name == "report":
            p.add_argument(
                "--comparisons", help="comparisons.csv from `llm4rec compare` (default: recompute)"
            )
            p.add_argument(
                "--no-mlflow", action="store_true", help="do not log the report to MLflow"
            )
    p = sub.add_parser(
        "anchors",
        help="published figures beside the anchor grid's runs: <reports_dir>/anchors.{md,tex,csv}",
    )
    p.add_argument("--config", default="benchmarks/anchors.yaml")
    p.add_argument(
        "--published",
        default="benchmarks/anchors/published.csv",
        help="the published figures (docs/anchors.md)",
    )
    p.add_argument("--out", help="the folder written (default: the grid's reports_dir)")
    p = sub.add_parser(
        "results-page",
        help="write docs/results/<grid>-<date>-<commit>.md from a finished grid's reports",
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--out", default="docs/results", help="the result pages' folder")
    p.add_argument(
        "--readme",
        default=None,
        help="README whose results block is refreshed ('': none; default: README.md for the "
        "default grid's page, none for another grid's)",
    )
    p.add_argument(
        "--wall-seconds",
        type=float,
        help="the job's wall clock as measured (e.g. `time make bench`)",
    )
    p = sub.add_parser("download", help="download a dataset's raw files (needs internet)")
    p.add_argument("source")
    p.add_argument("--raw-dir", default="results/raw")
    sub.add_parser("models", help="list registered models")
    p = sub.add_parser(
        "reproduce", help="rebuild a finished run from its record in a scratch folder and diff it"
    )
    p.add_argument(
        "run",
        help="a run folder (<results>/<grid>/runs/<dataset>/<model>/seed<N>) or an MLflow run id",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        help="largest |difference| per metric (default: 0 on CPU, 1e-4 on GPU)",
    )
    p.add_argument("--scratch", help="where to rebuild (default: a new temporary folder)")
    p.add_argument(
        "--upstream",
        choices=("rebuild", "recorded"),
        default="rebuild",
        help="what the run consumed: rebuilt from its records (default), or the recorded files "
        "as they are",
    )
    p.add_argument(
        "--tracking-uri",
        help="MLflow store for a run id (default: MLFLOW_TRACKING_URI, else results/mlflow.db)",
    )
    p = sub.add_parser(
        "smoke",
        help="every cell of a grid through Snakemake at toy cost (tiny backbones of the same "
        "architecture, a few steps and users): proves a grid runs before GPU time is spent on it",
    )
    p.add_argument("grid", help="a grid config, e.g. benchmarks/paper.yaml")
    p.add_argument("--device", default="cpu", help="where the toy runs run (default: cpu)")
    p.add_argument(
        "--dtype",
        default="bf16",
        choices=("bf16", "fp16", "fp32"),
        help="the backbones' dtype (default: bf16)",
    )
    p.add_argument(
        "--out",
        help="its own results, reports and MLflow store (default: results/smoke/<grid name>)",
    )
    p.add_argument("--cores", type=int, default=2)
    p.add_argument(
        "--target",
        default="both",
        choices=("both", "all", "ablations"),
        help="the Snakemake target(s) whose cells run: both (default: every cell of the grid), "
        "all (the main job: every paradigm once) or ablations (the variants and their parents)",
    )
    p.add_argument(
        "--models",
        help="comma-separated model entries to run (with the runs they consume and their "
        "parents); default: every entry of the target",
    )
    p = sub.add_parser(
        "plan",
        help="estimated cost of every cell of a grid (tokens, time, peak memory, device-hours) "
        "and the resources it requests, before anyone submits it",
    )
    p.add_argument("grid", help="a grid config, e.g. benchmarks/paper.yaml")
    p.add_argument(
        "--profile",
        default="h100",
        help="device profile: h100 (default) or cpu2 (llm4rec.plan.PROFILES)",
    )
    p.add_argument("--out", help="also write the table (Markdown) and a CSV beside it")
    p = sub.add_parser(
        "ui-check",
        help="screenshot and check MLflow's runs table and compare view in headless Chromium",
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument(
        "--out", default="reports/ui", help="where the screenshots go (default: reports/ui)"
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar="MODEL",
        help="the two models to compare (default: best baseline vs "
        "best other model by test NDCG@10)",
    )
    p = sub.add_parser(
        "relocate-store", help="repair a local MLflow store's artifact links after results/ moved"
    )
    p.add_argument(
        "--results",
        default="results",
        help="the results folder that holds mlflow.db (default: results)",
    )
    p = sub.add_parser(
        "tracking-server", help="start/stop an MLflow tracking server backed by PostgreSQL"
    )
    p.add_argument("action", choices=("start", "stop"))
    p.add_argument(
        "--dir", default="results/tracking-server", help="database, artifacts, logs and pid files"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="the MLflow server's address (default: loopback only)"
    )
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--pg-port", type=int, default=5433)
    p.add_argument(
        "--basic-auth",
        action="store_true",
        help="run MLflow's basic-auth app (for a shared server)",
    )
    return parser


def _error(message: object, status: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _cell_grid(args: argparse.Namespace, with_run: bool = True) -> Grid:
    """The grid of --config, once --dataset (and --model) are checked to be in it."""
    grid = load_grid(args.config)
    if args.dataset not in grid.datasets:
        raise ConfigError(
            f"{grid.path}: dataset '{args.dataset}' is not in datasets "
            f"(known: {', '.join(grid.datasets)})"
        )
    if with_run and args.model not in grid.models:
        raise ConfigError(
            f"{grid.path}: model '{args.model}' is not in models (known: {', '.join(grid.models)})"
        )
    return grid


# -- one function per subcommand ------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    grid = load_grid(args.config)
    sources = grid.source_runs()
    print(
        f"{grid.path}: ok; {len(grid.runs())} runs ({len(grid.evaluated_datasets)} datasets x "
        f"{len(grid.models)} models x their seeds; {len(grid.runs('main'))} in the main job)"
        + (f" + {len(sources)} on source datasets" if sources else "")
        + f", {len(grid.artifacts())} artifacts; every model's params checked"
    )
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    grid = _cell_grid(args, with_run=False)
    from llm4rec.runner import prepare_dataset

    split = prepare_dataset(grid, args.dataset)
    print(
        f"[llm4rec] split of {args.dataset}: {split.meta['stats']} -> "
        f"{grid.split_dir(args.dataset)}"
    )
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from llm4rec.assets import cache_dir, fetch, hub_assets

    grid = load_grid(args.config)
    absent = fetch(grid, check_only=args.check)
    for asset in hub_assets(grid):
        state = "missing" if asset in absent else "in the cache"
        print(f"[llm4rec] {asset}: {state} ({cache_dir()})")
    if absent:
        raise ConfigError(
            f"{args.config}: {len(absent)} hub asset(s) not in the local Hugging Face cache: "
            + "; ".join(str(a) for a in absent)
            + (f" (fetch them: llm4rec fetch --config {args.config})" if args.check else "")
        )
    return 0


def cmd_artifact(args: argparse.Namespace) -> int:
    grid = _cell_grid(args, with_run=False)
    from llm4rec.assets import require
    from llm4rec.runner import build_artifact

    require(grid, args.dataset)  # HF_HUB_OFFLINE: its hub assets are in the cache, or say which

    build_artifact(grid, args.dataset, args.artifact, args.key)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    grid = _cell_grid(args)
    from llm4rec.assets import require
    from llm4rec.llm.distributed import init_from_env, relaunch_per_gpu
    from llm4rec.runner import train_and_rank

    require(grid, args.dataset, args.model)  # HF_HUB_OFFLINE: its hub assets are in the cache
    gpus = grid.model_entry(args.model).get("resources", {}).get("gpu", 0)
    relaunch_per_gpu(gpus, args.argv)  # gpu > 1: the same command under torchrun
    init_from_env(grid.device)  # under torchrun: join the process group
    train_and_rank(grid, args.dataset, args.model, args.seed)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    grid = _cell_grid(args)
    from llm4rec.runner import evaluate_run

    result = evaluate_run(grid, args.dataset, args.model, args.seed)
    ndcg = result["test"].get("ndcg_at_10", float("nan"))
    print(f"[llm4rec] {args.model}/{args.dataset}/seed{args.seed}: test NDCG@10 {ndcg:.4f}")
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    grid = _cell_grid(args)
    from llm4rec.tracking import log_run

    log_run(grid, args.dataset, args.model, args.seed)
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from llm4rec.report.summary import write_summary

    grid = load_grid(args.config)
    files = args.metrics or [grid.run_dir(*cell) / layout.METRICS for cell in grid.runs("main")]
    write_summary(files, grid.reports_dir, grid.report_options().get("display_names"))
    print(f"[llm4rec] wrote {grid.reports_dir}/summary.md and summary.csv")
    return 0


def load_runs(grid: Grid, args: argparse.Namespace) -> list[RunRecord]:
    """The finished runs `compare` and `report` read: from MLflow, from folders, or the grid's."""
    from llm4rec.report.runs import runs_from_folders

    if args.mlflow_experiment:
        tags = dict(t.split("=", 1) for t in args.tag)
        dest = grid.results_dir / "mlflow_downloads" / args.mlflow_experiment
        from llm4rec.tracking import check_reachable, download_runs

        uri = args.tracking_uri or grid.tracking_uri()
        check_reachable(uri)
        return runs_from_folders(download_runs(uri, args.mlflow_experiment, dest, tags))
    folders = args.runs or [grid.run_dir(*cell) for cell in grid.runs(args.kind)]
    return runs_from_folders(folders)


def _report_setup(args: argparse.Namespace) -> tuple[Grid, ReportSpec, Path]:
    """(grid, report spec, output folder) of `compare` and `report`."""
    from llm4rec.report.build import ReportSpec

    grid = load_grid(args.config)
    spec = ReportSpec(grid.report_options(), label=f"tab:{grid.name}-results")
    return grid, spec, Path(args.out) if args.out else grid.report_dir(args.kind)


def cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from llm4rec.report.build import write_comparisons
    from llm4rec.report.compare import ComparisonError

    grid, spec, out = _report_setup(args)
    try:
        verdicts = pd.read_csv(args.verdicts) if args.verdicts else None
        table = write_comparisons(load_runs(grid, args), spec, out, args.kind, verdicts)
        significant = int(table["significant"].sum()) if len(table) else 0
        print(
            f"[llm4rec] {len(table)} comparisons ({significant} significant "
            f"after {spec.options['correction']}) -> {out / 'comparisons.csv'}"
        )
    except (ComparisonError, ValueError) as err:
        return _error(err)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import pandas as pd

    from llm4rec.report.build import build_report
    from llm4rec.report.compare import ComparisonError

    grid, spec, out = _report_setup(args)
    try:
        runs = load_runs(grid, args)
        comparisons = pd.read_csv(args.comparisons) if args.comparisons else None
        from llm4rec.plan import training_flops  # the learning-curve figure's compute axis

        flops = training_flops(grid, sorted({(r.dataset, r.model) for r in runs}))
        written = build_report(runs, spec, out, comparisons, args.kind, flops)
        print(f"[llm4rec] report: {len(written)} files in {out}")
        if not args.no_mlflow:
            from llm4rec.io import write_json
            from llm4rec.tracking import log_report

            record = log_report(grid, written, kind=args.kind)
            write_json(grid.report_marker(args.kind), record)
    except (ComparisonError, ValueError) as err:
        return _error(err)
    return 0


def cmd_anchors(args: argparse.Namespace) -> int:
    from llm4rec.report.anchors import AnchorError, write_anchors

    try:
        written = write_anchors(load_grid(args.config), args.published, args.out)
    except (AnchorError, FileNotFoundError) as err:
        return _error(err)
    print("[llm4rec] anchors: " + ", ".join(str(p) for p in written))
    return 0


def cmd_results_page(args: argparse.Namespace) -> int:
    from llm4rec.report.results_page import write_results_page

    if args.readme is None:  # the README shows the main job's latest page, not another grid's
        default = Path(args.config).resolve() == Path(DEFAULT_CONFIG).resolve()
        args.readme = "README.md" if default else ""
    readme = Path(args.readme) if args.readme else None
    written = write_results_page(load_grid(args.config), Path(args.out), readme, args.wall_seconds)
    print("[llm4rec] results page: " + ", ".join(str(p) for p in written))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from llm4rec.data.sources import AMAZON_2018_CATEGORIES, download_amazon2018

    if args.source not in AMAZON_2018_CATEGORIES:
        raise DataError(
            f"download: unknown source '{args.source}' "
            f"(downloadable: {', '.join(AMAZON_2018_CATEGORIES)})"
        )
    for path in download_amazon2018(args.source, f"{args.raw_dir}/{args.source}"):
        print(path)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from llm4rec.models import MODELS

    for spec in MODELS.values():
        consumes = "; consumes " + ", ".join(spec.inputs) if spec.inputs else ""
        print(f"{spec.name:24s} {spec.paradigm:14s} {spec.description}{consumes}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from llm4rec.reproduce import reproduce

    # a run id is looked up where the grids log: --tracking-uri, MLFLOW_TRACKING_URI, else
    # results/mlflow.db
    return reproduce(
        args.run,
        args.scratch,
        args.tolerance,
        args.tracking_uri or load_grid(DEFAULT_CONFIG).tracking_uri(),
        args.upstream,
    )


def cmd_smoke(args: argparse.Namespace) -> int:
    from llm4rec.smoke import SmokeError, smoke

    try:
        return smoke(
            args.grid,
            args.out,
            args.device,
            args.dtype,
            args.cores,
            args.target,
            args.models.split(",") if args.models else None,
        )
    except SmokeError as err:
        return _error(err)


def cmd_plan(args: argparse.Namespace) -> int:
    from llm4rec.io import write_text
    from llm4rec.plan import PROFILES, plan, render_plan

    if args.profile not in PROFILES:
        raise ConfigError(f"plan: unknown profile '{args.profile}' (known: {', '.join(PROFILES)})")
    frame = plan(load_grid(args.grid), args.profile)
    table = render_plan(frame, args.profile)
    print(table)
    if args.out:
        write_text(Path(args.out), table)
        write_text(Path(args.out).with_suffix(".csv"), frame.to_csv(index=False))
    return 0


def cmd_ui_check(args: argparse.Namespace) -> int:
    grid = load_grid(args.config)
    from llm4rec.ui_check import UiCheckError, check_ui

    try:
        shots = check_ui(grid, Path(args.out), tuple(args.compare) if args.compare else None)
    except UiCheckError as err:
        return _error(err, status=1)
    print("[llm4rec] MLflow UI checked: " + ", ".join(str(p) for p in shots.values()))
    return 0


def cmd_relocate_store(args: argparse.Namespace) -> int:
    from llm4rec.tracking import relocate_store

    results = Path(args.results)
    changed = relocate_store(results)
    rows = ", ".join(f"{n} {t}" for t, n in changed.items())
    print(
        f"[llm4rec] {results / 'mlflow.db'}: artifact links point at {results.resolve()} "
        f"({rows} rows changed)"
    )
    return 0


def cmd_tracking_server(args: argparse.Namespace) -> int:
    from llm4rec.tracking_server import TrackingServer, start, stop

    server = TrackingServer(Path(args.dir).resolve(), args.host, args.port, args.pg_port)
    if args.action == "start":
        start(server, basic_auth=args.basic_auth)
    else:
        stop(server)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": cmd_validate,
    "prepare": cmd_prepare,
    "fetch": cmd_fetch,
    "artifact": cmd_artifact,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "track": cmd_track,
    "summarize": cmd_summarize,
    "compare": cmd_compare,
    "report": cmd_report,
    "anchors": cmd_anchors,
    "results-page": cmd_results_page,
    "download": cmd_download,
    "models": cmd_models,
    "reproduce": cmd_reproduce,
    "smoke": cmd_smoke,
    "plan": cmd_plan,
    "ui-check": cmd_ui_check,
    "relocate-store": cmd_relocate_store,
    "tracking-server": cmd_tracking_server,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv  # `train` runs the same command line again under torchrun (gpu > 1)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, DataError, TrackingError, ServerError) as err:
        return _error(err)
    except OSError as err:
        # a full disk, an unwritable results folder, a missing file: say which path
        if isinstance(err, WriteError):
            return _error(err.strerror)
        return _error(f"{err.filename}: {err.strerror}" if err.filename else err)


if __name__ == "__main__":
    sys.exit(main())
