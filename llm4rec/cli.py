"""The `llm4rec` command. Each subcommand is one Snakemake rule's job.

    llm4rec validate --config benchmarks/default.yaml
    llm4rec prepare  --config C --dataset D
    llm4rec train    --config C --dataset D --model M --seed S
    llm4rec evaluate --config C --dataset D --model M --seed S
    llm4rec track    --config C --dataset D --model M --seed S
    llm4rec summarize --config C [metrics.json ...]
    llm4rec download amazon-beauty --raw-dir results/raw
    llm4rec models
"""

from __future__ import annotations

import argparse
import sys

from llm4rec.config import DEFAULT_CONFIG, ConfigError, load_grid
from llm4rec.data.atomic import DataError


def _grid_cell(parser: argparse.ArgumentParser, with_run: bool = True) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="grid config (benchmarks/*.yaml)")
    parser.add_argument("--dataset", required=True)
    if with_run:
        parser.add_argument("--model", required=True)
        parser.add_argument("--seed", type=int, required=True)


def _check_cell(grid, args, with_run: bool = True) -> None:
    if args.dataset not in grid.datasets:
        raise ConfigError(f"{grid.path}: dataset '{args.dataset}' is not in datasets (known: {', '.join(grid.datasets)})")
    if with_run and args.model not in grid.models:
        raise ConfigError(f"{grid.path}: model '{args.model}' is not in models (known: {', '.join(grid.models)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llm4rec", description="llm4rec-bench: LLM recommenders vs. strong baselines on one protocol")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate a grid config and print its runs")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    _grid_cell(sub.add_parser("prepare", help="load, preprocess and split one dataset"), with_run=False)
    for name, text in (("train", "train one model and rank top-K"), ("evaluate", "score a run's rankings"),
                       ("track", "log a finished run to MLflow")):
        _grid_cell(sub.add_parser(name, help=text))
    p = sub.add_parser("summarize", help="write reports/summary.{md,csv} from metrics.json files")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("metrics", nargs="*", help="metrics.json files (default: every finished run of the grid)")
    p = sub.add_parser("download", help="download a dataset's raw files (needs internet)")
    p.add_argument("source")
    p.add_argument("--raw-dir", default="results/raw")
    sub.add_parser("models", help="list registered models")
    args = parser.parse_args(argv)

    try:
        if args.command == "models":
            from llm4rec.models import MODELS

            for spec in MODELS.values():
                print(f"{spec.name:12s} {spec.paradigm:14s} {spec.description}")
            return 0
        if args.command == "download":
            from llm4rec.data.sources import AMAZON_2018_CATEGORIES, download_amazon2018

            if args.source not in AMAZON_2018_CATEGORIES:
                raise DataError(f"download: unknown source '{args.source}' (downloadable: {', '.join(AMAZON_2018_CATEGORIES)})")
            for path in download_amazon2018(args.source, f"{args.raw_dir}/{args.source}"):
                print(path)
            return 0
        grid = load_grid(args.config)
        if args.command == "validate":
            print(f"{grid.path}: ok; {len(grid.runs())} runs ({len(grid.datasets)} datasets x {len(grid.models)} models x {len(grid.seeds)} seeds)")
            return 0
        if args.command == "summarize":
            from llm4rec.report.summary import write_summary

            files = args.metrics or [grid.run_dir(*cell) / "metrics.json" for cell in grid.runs()]
            write_summary(files, grid.reports_dir)
            print(f"[llm4rec] wrote {grid.reports_dir}/summary.md and summary.csv")
            return 0
        _check_cell(grid, args, with_run=args.command != "prepare")
        if args.command == "prepare":
            from llm4rec.runner import prepare_dataset

            split = prepare_dataset(grid, args.dataset)
            print(f"[llm4rec] split of {args.dataset}: {split.meta['stats']} -> {grid.split_dir(args.dataset)}")
        elif args.command == "train":
            from llm4rec.runner import train_and_rank

            train_and_rank(grid, args.dataset, args.model, args.seed)
        elif args.command == "evaluate":
            from llm4rec.runner import evaluate_run

            result = evaluate_run(grid, args.dataset, args.model, args.seed)
            print(f"[llm4rec] {args.model}/{args.dataset}/seed{args.seed}: test NDCG@10 {result['test'].get('ndcg_at_10', float('nan')):.4f}")
        elif args.command == "track":
            from llm4rec.tracking import log_run

            log_run(grid, args.dataset, args.model, args.seed)
        return 0
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
