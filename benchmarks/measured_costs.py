"""Write the measured per-run costs of a finished grid (every run's metrics.json) to a CSV.

The CSV is the reference `llm4rec plan`'s CPU profile is checked against (tests/test_plan.py),
docs/results/default-cpu-costs.csv; it is generated, never typed:

    .venv/bin/python benchmarks/measured_costs.py --config benchmarks/default.yaml \\
        --out docs/results/default-cpu-costs.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm4rec.config import load_grid  # noqa: E402
from llm4rec.environment import environment  # noqa: E402
from llm4rec.io import read_json, write_text  # noqa: E402


def measured(config: str) -> pd.DataFrame:
    grid = load_grid(config)
    rows = []
    for dataset, model, seed in grid.runs():
        path = grid.run_dir(dataset, model, seed) / "metrics.json"
        if not path.is_file():
            continue
        cost = read_json(path)["cost"]
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "seed": seed,
                "train_time_s": cost["train_time_s"],
                "inference_time_valid_s": cost.get("inference_time_valid_s", 0.0),
                "inference_time_test_s": cost["inference_time_test_s"],
                "run_seconds": cost["train_time_s"]
                + cost.get("inference_time_valid_s", 0.0)
                + cost["inference_time_test_s"],
            }
        )
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/default.yaml")
    parser.add_argument("--out", default="docs/results/default-cpu-costs.csv")
    args = parser.parse_args()
    frame = measured(args.config)
    if frame.empty:
        print(f"error: no finished run of {args.config} (run `make bench` first)", file=sys.stderr)
        return 2
    env = environment()
    header = (
        "# measured by benchmarks/measured_costs.py on "
        f"{env.get('cpu_model', 'unknown CPU')}, {env.get('cpu_count', '?')} cores\n"
    )
    write_text(Path(args.out), header + frame.to_csv(index=False))
    print(f"[llm4rec] {len(frame)} runs -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
