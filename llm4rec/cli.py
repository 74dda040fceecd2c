"""The `llm4rec` command. Each subcommand is one Snakemake rule's job.

llm4rec validate --config benchmarks/default.yaml
llm4rec prepare  --config C --dataset D
llm4rec artifact --config C --dataset D --artifact A --key K
llm4rec train    --config C --dataset D --model M --seed S
llm4rec evaluate --config C --dataset D --model M --seed S
llm4rec track    --config C --dataset D --model M --seed S
llm4rec summarize --config C [metrics.json ...]
llm4rec compare  --config C [RUN_DIR ...] [--mlflow-experiment E --tag model=bpr ...] [--out DIR]
llm4rec report   --config C [RUN_DIR ...] [--mlflow-experiment E ...] [--comparisons FILE] [--out DIR]
llm4rec download amazon-beauty --raw-dir results/raw
llm4rec models
llm4rec tracking-server start|stop [--dir results/tracking-server --port 5000 --pg-port 5433]
llm4rec reproduce RUN [--tolerance 0] [--upstream rebuild|recorded]
llm4rec smoke GRID [--device cpu] [--dtype bf16] [--out results/smoke/<grid>]
llm4rec plan GRID [--profile h100|cpu2] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import sys

from llm4rec.config import DEFAULT_CONFIG, ConfigError, load_grid
from llm4rec.data.atomic import DataError
from llm4rec.io import WriteError
from llm4rec.tracking import TrackingError
from llm4rec.tracking_server import ServerError


def _grid_cell(parser: argparse.ArgumentParser, with_run: bool = True) -> None:
    parser.add_argument(
        "--config", default=str(DEFAULT_CONFIG), help="grid config (benchmarks/*.yaml)"
    )
    parser.add_argument("--dataset", required=True)
    if with_run:
        parser.add_argument("--model", required=True)
        parser.add_argument("--seed", type=int, required=True)


def _check_cell(grid, args, with_run: bool = True) -> None:
    if args.dataset not in grid.datasets:
        raise ConfigError(
            f"{grid.path}: dataset '{args.dataset}' is not in datasets (known: {', '.join(grid.datasets)})"
        )
    if with_run and args.model not in grid.models:
        raise ConfigError(
            f"{grid.path}: model '{args.model}' is not in models (known: {', '.join(grid.models)})"
        )


def main(argv: list[str] | None = None) -> int:
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
        p.add_argument("--out", help="output folder (default: the grid's reports_dir)")
        if name == "report":
            p.add_argument(
                "--comparisons", help="comparisons.csv from `llm4rec compare` (default: recompute)"
            )
            p.add_argument(
                "--no-mlflow", action="store_true", help="do not log the report to MLflow"
            )
    p = sub.add_parser(
        "results-page",
        help="write docs/results/<grid>-<date>-<commit>.md from a finished grid's reports",
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--out", default="docs/results", help="the result pages' folder")
    p.add_argument(
        "--readme", default="README.md", help="README whose results block is refreshed ('' : none)"
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
        help="what the run consumed: rebuilt from its records (default), or the recorded files as they are",
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
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    try:
        if args.command == "models":
            from llm4rec.models import MODELS

            for spec in MODELS.values():
                consumes = "; consumes " + ", ".join(spec.inputs) if spec.inputs else ""
                print(f"{spec.name:24s} {spec.paradigm:14s} {spec.description}{consumes}")
            return 0
        if args.command == "download":
            from llm4rec.data.sources import AMAZON_2018_CATEGORIES, download_amazon2018

            if args.source not in AMAZON_2018_CATEGORIES:
                raise DataError(
                    f"download: unknown source '{args.source}' (downloadable: {', '.join(AMAZON_2018_CATEGORIES)})"
                )
            for path in download_amazon2018(args.source, f"{args.raw_dir}/{args.source}"):
                print(path)
            return 0
        if args.command == "reproduce":
            from llm4rec.reproduce import reproduce

            # a run id is looked up where the grids log: --tracking-uri, MLFLOW_TRACKING_URI, else results/mlflow.db
            return reproduce(
                args.run,
                args.scratch,
                args.tolerance,
                args.tracking_uri or load_grid(DEFAULT_CONFIG).tracking_uri(),
                args.upstream,
            )
        if args.command == "smoke":
            from llm4rec.smoke import SmokeError, smoke

            try:
                return smoke(args.grid, args.out, args.device, args.dtype, args.cores)
            except SmokeError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
        if args.command == "relocate-store":
            from pathlib import Path

            from llm4rec.tracking import relocate_store

            changed = relocate_store(Path(args.results))
            print(
                f"[llm4rec] {Path(args.results) / 'mlflow.db'}: artifact links point at {Path(args.results).resolve()} "
                f"({', '.join(f'{n} {t}' for t, n in changed.items())} rows changed)"
            )
            return 0
        if args.command == "tracking-server":
            from pathlib import Path

            from llm4rec.tracking_server import TrackingServer, start, stop

            server = TrackingServer(Path(args.dir).resolve(), args.host, args.port, args.pg_port)
            start(server, basic_auth=args.basic_auth) if args.action == "start" else stop(server)
            return 0
        if args.command == "plan":
            from pathlib import Path

            from llm4rec.io import write_text
            from llm4rec.plan import PROFILES, plan, render_plan

            if args.profile not in PROFILES:
                raise ConfigError(
                    f"plan: unknown profile '{args.profile}' (known: {', '.join(PROFILES)})"
                )
            frame = plan(load_grid(args.grid), args.profile)
            table = render_plan(frame, args.profile)
            print(table)
            if args.out:
                write_text(Path(args.out), table)
                write_text(Path(args.out).with_suffix(".csv"), frame.to_csv(index=False))
            return 0
        grid = load_grid(args.config)
        if args.command == "validate":
            print(
                f"{grid.path}: ok; {len(grid.runs())} runs ({len(grid.datasets)} datasets x {len(grid.models)} models x their "
                f"seeds), {len(grid.artifacts())} artifacts; every model's params checked"
            )
            return 0
        if args.command == "ui-check":
            from pathlib import Path

            from llm4rec.ui_check import UiCheckError, check_ui

            try:
                shots = check_ui(
                    grid, Path(args.out), tuple(args.compare) if args.compare else None
                )
            except UiCheckError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            print("[llm4rec] MLflow UI checked: " + ", ".join(str(p) for p in shots.values()))
            return 0
        if args.command == "summarize":
            from llm4rec.report.summary import write_summary

            files = args.metrics or [
                grid.run_dir(*cell) / "metrics.json" for cell in grid.runs("main")
            ]
            write_summary(files, grid.reports_dir, grid.report_options().get("display_names"))
            print(f"[llm4rec] wrote {grid.reports_dir}/summary.md and summary.csv")
            return 0
        if args.command in ("compare", "report"):
            return compare_or_report(grid, args)
        if args.command == "results-page":
            from pathlib import Path

            from llm4rec.report.results_page import write_results_page

            readme = Path(args.readme) if args.readme else None
            written = write_results_page(grid, Path(args.out), readme, args.wall_seconds)
            print("[llm4rec] results page: " + ", ".join(str(p) for p in written))
            return 0
        _check_cell(grid, args, with_run=args.command not in ("prepare", "artifact"))
        if args.command == "prepare":
            from llm4rec.runner import prepare_dataset

            split = prepare_dataset(grid, args.dataset)
            print(
                f"[llm4rec] split of {args.dataset}: {split.meta['stats']} -> {grid.split_dir(args.dataset)}"
            )
        elif args.command == "artifact":
            from llm4rec.runner import build_artifact

            build_artifact(grid, args.dataset, args.artifact, args.key)
        elif args.command == "train":
            from llm4rec.llm.distributed import init_from_env, relaunch_per_gpu
            from llm4rec.runner import train_and_rank

            relaunch_per_gpu(
                grid.model_entry(args.model).get("resources", {}).get("gpu", 0), argv
            )  # gpu > 1: torchrun
            init_from_env(grid.device)  # under torchrun: join the process group
            train_and_rank(grid, args.dataset, args.model, args.seed)
        elif args.command == "evaluate":
            from llm4rec.runner import evaluate_run

            result = evaluate_run(grid, args.dataset, args.model, args.seed)
            print(
                f"[llm4rec] {args.model}/{args.dataset}/seed{args.seed}: test NDCG@10 {result['test'].get('ndcg_at_10', float('nan')):.4f}"
            )
        elif args.command == "track":
            from llm4rec.tracking import log_run

            log_run(grid, args.dataset, args.model, args.seed)
        return 0
    except (ConfigError, DataError, TrackingError, ServerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (
        OSError
    ) as err:  # a full disk, an unwritable results folder, a missing file: say which path
        if isinstance(err, WriteError):
            print(f"error: {err.strerror}", file=sys.stderr)
        else:
            print(
                f"error: {err.filename}: {err.strerror}" if err.filename else f"error: {err}",
                file=sys.stderr,
            )
        return 2


def load_runs(grid, args):
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


def compare_or_report(grid, args) -> int:
    from pathlib import Path

    import pandas as pd

    from llm4rec.report.build import ReportSpec, build_report, write_comparisons
    from llm4rec.report.compare import ComparisonError

    spec = ReportSpec(grid.report_options(), label=f"tab:{grid.name}-results")
    out = Path(args.out) if args.out else grid.report_dir(args.kind)
    try:
        runs = load_runs(grid, args)
        if args.command == "compare":
            table = write_comparisons(runs, spec, out, args.kind)
            print(
                f"[llm4rec] {len(table)} comparisons ({int(table['significant'].sum()) if len(table) else 0} significant "
                f"after {spec.options['correction']}) -> {out / 'comparisons.csv'}"
            )
            return 0
        comparisons = pd.read_csv(args.comparisons) if args.comparisons else None
        written = build_report(runs, spec, out, comparisons, args.kind)
        print(f"[llm4rec] report: {len(written)} files in {out}")
        if not args.no_mlflow:
            from llm4rec.io import write_json
            from llm4rec.tracking import log_report

            record = log_report(grid, written, kind=args.kind)
            write_json(grid.report_marker(args.kind), record)
        return 0
    except (ComparisonError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
