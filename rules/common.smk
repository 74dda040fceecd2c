"""The grid and every path the rules use (one place).

The grid file comes in as `--config grid=PATH` (default benchmarks/default.yaml) and is validated by
llm4rec's loader, whose errors name the file and key.
"""

import sys

from llm4rec import layout
from llm4rec.config import ConfigError, load_grid
from llm4rec.data.sources import AMAZON_2018_CATEGORIES, amazon2018_files
from llm4rec.evaluation.evaluate import EVALUATOR_VERSION
from llm4rec.io import stable_hash
from llm4rec.models import ARTIFACTS, MODELS
from llm4rec.report.build import report_files

if "models" in config:
    sys.exit(
        "error: pass the grid as `--config grid=PATH` (e.g. --config grid=benchmarks/paper.yaml), "
        "not --configfile: llm4rec validates the file itself and names it in its errors"
    )
CONFIG_FILE = str(config.get("grid", "benchmarks/default.yaml"))
try:
    GRID = load_grid(CONFIG_FILE)
except ConfigError as err:
    sys.exit(f"error: {err}")

PY = sys.executable
LLM4REC = f"{PY} -m llm4rec.cli"
# path patterns (llm4rec.layout names every file and folder; Snakemake fills the wildcards)
DATA = str(layout.split_dir(GRID.grid_dir, "{dataset}"))
RUN = str(layout.run_dir(GRID.grid_dir, "{dataset}", "{model}", "{seed}"))
LOGS = str(GRID.grid_dir / layout.LOGS)
TRAIN_FILES = [f"{RUN}/{name}" for name in layout.TRAIN_FILES]
EVALUATE_FILES = [f"{RUN}/{name}" for name in layout.EVALUATE_FILES]
REPORT_KINDS = ("main", "ablations")

wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    model=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",
    key=r"[0-9a-f]+",


# On a cluster, the cheap rules run where Snakemake runs (seconds each; 190 `track` jobs queued one by
# one on SLURM would wait longer than they run), downloads too (compute nodes often have no
# internet); prepare, artifacts and train are submitted.
localrules:
    all,
    ablations,
    download_amazon2018,
    evaluate,
    track,
    summary,
    compare,
    report,
    compare_ablations,
    report_ablations,


def run_folders(kind="all"):
    """The run folders of the main job (`main`), of the ablation target (`ablations`), or all."""
    return [str(GRID.run_dir(d, m, s)) for d, m, s in GRID.runs(kind)]


def run_files(kind, *names):
    """Each named file of every run folder of a kind."""
    return [f"{folder}/{name}" for folder in run_folders(kind) for name in names]


def source_run_files(kind, *names):
    """Each named file of the runs on `role: source` datasets that a kind's runs transfer from
    (tracked like any run; no rows in the kind's tables)."""
    folders = [str(GRID.run_dir(d, m, s)) for d, m, s in GRID.source_runs(kind)]
    return [f"{folder}/{name}" for folder in folders for name in names]


def model_resource(name, default):
    def get(wildcards):
        entry = GRID.model_entry(wildcards.model).get("resources", {})
        if name == "gpu":
            return entry.get("gpu", 1 if GRID.device.startswith("cuda") else 0)
        return entry.get(name, default)

    return get


def raw_inputs(wildcards):
    source = GRID.dataset_config(wildcards.dataset)["source"]
    if source in AMAZON_2018_CATEGORIES:
        files = amazon2018_files(AMAZON_2018_CATEGORIES[source])
        return [f"{GRID.results_dir}/raw/{source}/{name}" for name in files]
    return []


def train_inputs(wildcards):
    """The split, plus what the model consumes (ModelSpec.inputs): another run's exports folder
    or an artifact's artifact.json. These edges show in `snakemake -n`; a changed upstream reruns
    the consumer (its config hash is part of the consumer's run hash)."""
    sources = GRID.input_sources(wildcards.dataset, wildcards.model, int(wildcards.seed))
    split = str(layout.split_dir(GRID.grid_dir, wildcards.dataset) / layout.SPLIT_JSON)
    return [split] + [str(s.marker) for s in sources.values()]


def report_outputs(kind):
    return [str(path) for path in report_files(GRID.report_dir(kind), GRID.report_options(), kind)]
