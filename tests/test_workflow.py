"""A small end-to-end grid through Snakemake: prepare -> train -> evaluate -> MLflow -> summary.

Checks the researcher-facing promises on the shared finished grid (tests/helpers/grid.py; what
reruns or adds runs works on a copy): the DAG runs, every MLflow run has the same metric keys and
the required tags, rerunning a finished grid does nothing, deleting one run's output redoes only
that run, and reruns never duplicate MLflow runs.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .helpers import snakemake_command
from .helpers.grid import GRID, copy_of, mlflow_runs, planned_jobs, snakemake, snakemake_run
from .helpers.grid import MODELS as GRID_MODELS

REPO = Path(__file__).resolve().parents[1]
MODELS = set(GRID_MODELS)
pytestmark = pytest.mark.slow


def test_grid_runs_end_to_end(finished_ml100k):
    runs = finished_ml100k.runs
    for model in sorted(MODELS):
        run = runs / model / "seed0"
        for name in (
            "run.json",
            "metrics.json",
            "mlflow.json",
            "per_user_test.parquet",
            "rankings_test.parquet",
        ):
            assert (run / name).is_file(), run / name
    assert (runs / "bpr" / "seed0" / "exports" / "item_embeddings.npy").is_file()
    consumer = json.loads((runs / "emb_knn" / "seed0" / "run.json").read_text())
    bpr = json.loads((runs / "bpr" / "seed0" / "run.json").read_text())
    assert consumer["run"]["inputs"]["embeddings"]["config_hash"] == bpr["config_hash"]
    assert (
        consumer["inputs"]["embeddings"]["source"] == f"run bpr/seed0 (config {bpr['config_hash']})"
    )
    summary = (finished_ml100k.reports / "summary.md").read_text()
    assert "| Baselines | BPR | `bpr` | 1 |" in summary and "ndcg_at_10" in summary
    reports = finished_ml100k.reports
    for name in (
        "results_table.tex",
        "results_table.md",
        "results_table.csv",
        "cost_table.tex",
        "comparisons.csv",
        "slices.md",
        "figures/ndcg_at_10_ci.pdf",
        "figures/ndcg_at_10_vs_cost.png",
    ):
        assert (reports / name).is_file(), name
    comparisons = pd.read_csv(reports / "comparisons.csv")
    assert set(comparisons["system"]) | set(comparisons["reference"]) == MODELS
    client, report = mlflow_runs(finished_ml100k, report=True)
    assert len(report) == 1
    logged = {a.path for a in client.list_artifacts(report[0].info.run_id)}
    assert {"results_table.tex", "comparisons.csv", "figures"} <= logged


def test_mlflow_runs_have_same_keys_and_tags(finished_ml100k):
    _, runs = mlflow_runs(finished_ml100k)
    assert sorted(r.data.tags["model"] for r in runs) == sorted(MODELS)
    # the same metric keys for every model; training curves (curve.*) are per-family step series
    keys = {frozenset(k for k in r.data.metrics if not k.startswith("curve.")) for r in runs}
    assert len(keys) == 1
    assert {
        "test_ndcg_at_10",
        "valid_hr_at_5",
        "test_coverage_at_10",
        "train_time_s",
        "peak_memory_mb",
    } <= set(next(iter(keys)))
    assert not any("@" in key for key in next(iter(keys)))
    for run in runs:
        for tag in ("dataset", "model", "paradigm", "seed", "config_hash", "git_commit"):
            assert run.data.tags.get(tag), tag
        assert run.data.params["model"] == run.data.tags["model"]
        assert run.inputs.dataset_inputs[0].dataset.name == run.data.tags["dataset"]
    bpr = next(r for r in runs if r.data.tags["model"] == "bpr")
    assert bpr.data.params["hp.epochs"] == "2" and bpr.data.params["display_name"] == "BPR"


def dag_edges(output: str) -> set[tuple[str, str]]:
    """(upstream, downstream) labels of `snakemake --dag` (DOT): ('train bpr', 'train emb_knn')."""
    labels = {
        m.group(1): " ".join(re.sub(r"\\n\w+: ", " ", m.group(2)).split()[:2])
        for m in re.finditer(r'^\s*(\d+)\[label = "([^"]+)"', output, re.M)
    }
    return {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", output, re.M)}


def test_a_consumer_depends_on_its_upstream_run_and_reruns_when_it_changes(
    finished_ml100k, tmp_path
):
    workdir = copy_of(finished_ml100k, tmp_path / "grid").workdir
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    dag = subprocess.run(
        [
            *snakemake_command(workdir, workdir / "grid.yaml"),
            "--dag",
            "-F",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    ).stdout
    assert ("train bpr", "train emb_knn") in dag_edges(dag)
    assert ("train mostpop", "train emb_knn") not in dag_edges(dag)
    changed = GRID | {
        "models": [
            m | {"params": {**m["params"], "epochs": 3}} if m["name"] == "bpr" else m
            for m in GRID["models"]
        ]
    }
    (workdir / "grid_changed.yaml").write_text(yaml.safe_dump(changed))
    out = subprocess.run(
        [
            *snakemake_command(workdir, workdir / "grid_changed.yaml"),
            "-n",
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    # bpr (its params changed) and emb_knn (its upstream did)
    assert planned_jobs(out.stdout)["train"] == 2
    assert (
        "runs/ml-100k/emb_knn/seed0" in out.stdout
        and "runs/ml-100k/sasrec/seed0/run.json" not in out.stdout
    )


def test_an_artifact_is_an_auxiliary_rule_the_consumer_depends_on(tmp_path):
    grid = GRID | {
        "models": [
            {
                "name": "emb_knn",
                "inputs": {"embeddings": {"artifact": "item_text_lsa", "params": {"dim": 8}}},
            }
        ]
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    base = [
        *snakemake_command(tmp_path, tmp_path / "grid.yaml"),
    ]
    out = subprocess.run(
        base + ["-n", "--cores", "1"], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert planned_jobs(out.stdout)["item_text_lsa"] == 1
    dag = subprocess.run(
        base + ["--dag"], capture_output=True, text=True, env=env, timeout=300
    ).stdout
    edges = dag_edges(dag)
    assert any(a.startswith("item_text_lsa ") and b == "train emb_knn" for a, b in edges)
    assert any(a == "prepare ml-100k" and b.startswith("item_text_lsa ") for a, b in edges)


def test_rerun_does_nothing_and_deleting_one_run_redoes_only_it(finished_ml100k, tmp_path):
    grid = copy_of(finished_ml100k, tmp_path / "grid")
    workdir = grid.workdir
    assert "Nothing to be done" in snakemake(workdir, "-n")
    shutil.rmtree(workdir / "results" / "e2e" / "runs" / "ml-100k" / "sasrec" / "seed0")
    jobs = planned_jobs(snakemake(workdir, "-n"))
    assert jobs == {
        "all": 1,
        "train": 1,
        "evaluate": 1,
        "track": 1,
        "summary": 1,
        "compare": 1,
        "report": 1,
    }, jobs
    shutil.rmtree(workdir / "results" / "e2e" / "runs" / "ml-100k" / "bpr" / "seed0")
    jobs = planned_jobs(snakemake(workdir, "-n"))  # bpr, its consumer emb_knn, and sasrec
    assert jobs == {
        "all": 1,
        "train": 3,
        "evaluate": 3,
        "track": 3,
        "summary": 1,
        "compare": 1,
        "report": 1,
    }, jobs
    snakemake(workdir)
    # the retrained runs replaced or reused, never duplicated
    assert len(mlflow_runs(grid)[1]) == len(MODELS)
    assert len(mlflow_runs(grid, report=True)[1]) == 1
    assert "Nothing to be done" in snakemake(workdir, "-n")


def test_dry_run_of_shipped_configs_shows_whole_dag(tmp_path):
    # (trained, tracked) from scratch. Main job (`all`): default 6 baselines (SASRec and SASRec+
    # among them) x 2 seeds + AlphaRec and RTA x 2 seeds + 3 one-forward LLM rows x their main
    # seed + 3 decoded rows x 1 seed; paper 14 models x 5 seeds x 2 datasets. `ablations`: its
    # report keeps the main report's verdict for a pair both test, so it needs the main job's
    # comparisons, and with them every run of the grid: default's 57 (main and variants, every
    # seed) + AlphaRec on the ml-1m slice; paper every model: 43 x 5 seeds x 2 datasets. The
    # new-item grid: 9 rows at seed 0; its ablations add TIGER's cold-start row and track the
    # runs the ablation report holds (the row, sid_tiger and the 4 baselines). (trained, tracked):
    expected = {
        ("default.yaml", "all"): (22, 22),
        ("paper.yaml", "all"): (140, 140),
        ("default.yaml", "ablations"): (58, 58),
        ("paper.yaml", "ablations"): (430, 430),
        ("new_items.yaml", "all"): (9, 9),
        ("new_items.yaml", "ablations"): (10, 6),
    }
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    def dry_run(name: str, target: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                target,  # before --config, which takes every word after it
                "-n",
                # every job of the target's DAG, as from scratch: the counts do not depend on what
                # this checkout has already run (`make bench` before `make test`)
                "--forceall",
                "--nolock",  # the dry runs run side by side in one working directory
                "--config",
                f"grid=benchmarks/{name}",
                "--cores",
                "1",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:  # each dry run is one core's work
        outputs = dict(zip(expected, pool.map(lambda cell: dry_run(*cell), expected), strict=True))
    for (name, target), runs in expected.items():
        out = outputs[(name, target)]
        assert out.returncode == 0, out.stderr[-3000:]
        jobs = planned_jobs(out.stdout + out.stderr)
        assert (jobs["train"], jobs["track"]) == runs, (name, target)


def test_bad_config_fails_before_anything_runs(tmp_path):
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID | {"models": [{"name": "sasrek"}]}))
    proc = subprocess.run(
        [
            *snakemake_command(tmp_path, tmp_path / "grid.yaml"),
            "-n",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "models[0].name 'sasrek' is not a known model" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()
    # the grid given the Snakemake way (--configfile) is refused, saying how to pass it
    old_way = [a if a != "--config" else "--configfile" for a in proc.args]
    old_way[old_way.index("--configfile") + 1] = str(tmp_path / "grid.yaml")
    proc = subprocess.run(old_way, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "pass the grid as `--config grid=PATH`" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists()


def test_semantic_ids_rule_reruns_only_when_its_config_changes(tmp_path):
    codes = {
        "artifact": "semantic_ids",
        "params": {"quantizer": "random", "levels": 2, "codebook_size": 8},
    }
    tiger = {"name": "sid_tiger", "inputs": {"codes": codes}, "params": {"sft": {"steps": 2}}}
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

    def run(grid: dict, *args: str) -> str:
        (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
        proc = subprocess.run(
            [
                *snakemake_command(tmp_path, tmp_path / "grid.yaml"),
                "--cores",
                "1",
                *args,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    # the RL stage consumes the parent's exported policy and the same code table
    stage = {"name": "sid_tiger_grpo", "inputs": {"codes": codes}, "params": {"steps": 2}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID | {"models": [tiger, stage]}))
    command = snakemake_command(tmp_path, tmp_path / "grid.yaml")
    command.insert(3, "ablations")  # the RL stage is a variant: the ablation target's
    dag = subprocess.run(
        [*command, "--cores", "1", "--dag"], capture_output=True, text=True, env=env, timeout=600
    )
    assert dag.returncode == 0, dag.stderr[-3000:]
    edges = dag_edges(dag.stdout)
    assert ("train sid_tiger", "train sid_tiger_grpo") in edges
    assert any(a.startswith("semantic_ids ") and b == "train sid_tiger_grpo" for a, b in edges)
    grid = GRID | {"models": [tiger]}
    edges = dag_edges(run(grid, "--dag"))
    assert any(a.startswith("semantic_ids ") and b == "train sid_tiger" for a, b in edges)
    assert any(a == "prepare ml-100k" and b.startswith("semantic_ids ") for a, b in edges)
    assert planned_jobs(run(grid, "-n"))["semantic_ids"] == 1
    from llm4rec.config import load_grid

    # relative to the workdir
    (marker,) = [str(s.marker) for s in load_grid(tmp_path / "grid.yaml").artifacts().values()]
    run(grid, marker)  # build only the code table (prepare + semantic_ids)
    assert "semantic_ids" not in planned_jobs(run(grid, "-n"))
    # the generator's budget is not the tokenizer's config: only the training reruns
    longer = GRID | {"models": [tiger | {"params": {"sft": {"steps": 3}}}]}
    assert (
        "semantic_ids" not in planned_jobs(run(longer, "-n"))
        and planned_jobs(run(longer, "-n"))["train"] == 1
    )
    # spelling out a default is the same config; another codebook size: a new code table, a new run
    same = GRID | {
        "models": [
            tiger
            | {"inputs": {"codes": {**codes, "params": {**codes["params"], "kmeans_iters": 100}}}}
        ]
    }
    assert "semantic_ids" not in planned_jobs(run(same, "-n"))
    bigger = GRID | {
        "models": [
            tiger
            | {"inputs": {"codes": {**codes, "params": {**codes["params"], "codebook_size": 16}}}}
        ]
    }
    jobs = planned_jobs(run(bigger, "-n"))
    assert jobs["semantic_ids"] == 1 and jobs["train"] == 1


def test_a_cf_injected_run_waits_for_its_cf_source_and_reruns_when_its_embeddings_change(
    finished_ml100k, tmp_path
):
    """cf_e4srec (on a tiny random Llama) consumes the grid's SASRec item embeddings: the DAG shows
    the edge, the job runs after SASRec, reruns when SASRec does, and refuses hand-edited
    embeddings."""
    from .helpers import tiny_backbone

    workdir = copy_of(finished_ml100k, tmp_path / "grid").workdir
    backbone = workdir / "tiny-llama"
    model, tokenizer = tiny_backbone(["Movies", "watched", ":", "Next"], seed=0, layers=1)
    model.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    cf = {
        "name": "cf_e4srec",
        "evaluation": {"valid_users": 20},
        "params": {
            "backbone": {"name_or_path": str(backbone)},
            "prompt": {"user": "Movies watched :{history}", "answer_prefix": "Next :"},
            "text_retention": {"enabled": False},
            "max_history": 5,
            "loss_positions": "all",
            "sft": {"steps": 2, "batch_size": 16, "checkpoint_every": 2},
            "valid_users": 20,
            "eval_every": 2,
        },
    }
    grid = GRID | {"models": GRID["models"] + [cf]}
    (workdir / "grid_cf.yaml").write_text(yaml.safe_dump(grid))

    def run(*args: str) -> str:
        return snakemake(workdir, *args, grid="grid_cf.yaml")

    edges = dag_edges(run("--dag", "-F"))
    assert ("train sasrec", "train cf_e4srec") in edges and (
        "train bpr",
        "train cf_e4srec",
    ) not in edges
    run()  # runs only the new cell (the rest of the grid is finished)
    record = json.loads(
        (
            workdir / "results" / "e2e" / "runs" / "ml-100k" / "cf_e4srec" / "seed0" / "run.json"
        ).read_text()
    )
    assert record["inputs"]["cf_source"]["source"].startswith("run sasrec/seed0")
    assert record["fit"]["cf_source"] == record["inputs"]["cf_source"]["source"]
    assert "Nothing to be done" in run("-n")
    # the source reruns (forced here; in practice: new settings, new code, a deleted run folder): so
    # does the CF job
    runs = "results/e2e/runs/ml-100k"
    planned = run("-n", "--forcerun", f"{runs}/sasrec/seed0/run.json")
    assert planned_jobs(planned)["train"] == 2, planned  # sasrec and its consumer, nothing else
    assert (
        f"{runs}/cf_e4srec/seed0/run.json" in planned
        and f"{runs}/bpr/seed0/run.json" not in planned
    )
    # hand-edited embeddings in the source's exports are refused when the CF job runs, naming both
    import numpy as np

    exported = workdir / runs / "sasrec" / "seed0" / "exports" / "item_embeddings.npy"
    np.save(exported, np.load(exported) * 2)
    proc = snakemake_run(
        workdir, "--forcerun", f"{runs}/cf_e4srec/seed0/run.json", grid="grid_cf.yaml"
    )
    assert proc.returncode != 0
    assert "consumes 'cf_source' from run 'sasrec' seed 0" in proc.stdout + proc.stderr
    assert "modified after it was written: rerun the upstream" in proc.stdout + proc.stderr
