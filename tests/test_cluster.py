"""The cluster path: a tiny grid through snakemake-executor-plugin-cluster-generic on a loopback
"cluster" (profiles/loopback: every job its own detached process), and the SLURM profile's mapping
of the same recorded submissions to sbatch flags (snakemake-executor-plugin-slurm's own code)."""

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from .helpers import snakemake_command
from .helpers.grid import small_grid

REPO = Path(__file__).resolve().parents[1]
GRID = small_grid(
    "lb",
    [
        # what each train submission asks for (a GPU job: gpu 1; loopback runs it on CPU)
        {"name": "mostpop", "resources": {"gpu": 1, "mem_mb": 1500, "runtime": 11}},
        {
            "name": "bpr",
            "params": {"epochs": 1, "show_progress": False},
            "threads": 2,
            "resources": {"mem_mb": 2500, "runtime": 13},
        },
        # an artifact job asks for what its input names (an LLM encoder's GPU; LSA here, on CPU)
        {
            "name": "emb_knn",
            "inputs": {
                "embeddings": {
                    "artifact": "item_text_lsa",
                    "resources": {"gpu": 1, "mem_mb": 1700, "runtime": 17},
                }
            },
        },
    ],
)
JOBS = {"prepare": 1, "item_text_lsa": 1, "train": 3}  # submitted; the cheap rules are localrules
LOCAL = {"evaluate": 3, "track": 3, "summary": 1, "compare": 1, "report": 1}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loopback_grid(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("loopback")
    (workdir / "grid.yaml").write_text(yaml.safe_dump(GRID))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "LLM4REC_LOOPBACK_DIR": str(workdir / "cluster")
    }
    proc = subprocess.Popen(
        [
            *snakemake_command(workdir, workdir / "grid.yaml"),
            "--profile",
            str(REPO / "profiles" / "loopback"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, output[-4000:]
    submissions = [
        json.loads(line)
        for line in (workdir / "cluster" / "submissions.jsonl").read_text().splitlines()
    ]
    return workdir, proc.pid, submissions


def test_every_job_is_a_separate_detached_submission(loopback_grid):
    workdir, snakemake_pid, submissions = loopback_grid
    counts = {}
    for s in submissions:
        counts[s["rule"]] = counts.get(s["rule"], 0) + 1
    # every costly job went through the submit command; none of the cheap ones did
    assert counts == JOBS
    assert not set(counts) & set(LOCAL)
    pids = [s["pid"] for s in submissions]
    # own processes: no shared in-process state
    assert len(set(pids)) == len(pids) and snakemake_pid not in pids
    assert all(s["submitter_pid"] != snakemake_pid for s in submissions)


def test_outputs_and_logs_land_where_the_next_rule_expects_them(loopback_grid):
    workdir, _, submissions = loopback_grid
    grid = workdir / "results" / "lb"
    for model in ("mostpop", "bpr"):
        run = grid / "runs" / "ml-100k" / model / "seed0"
        for name in (
            "run.json",
            "rankings_test.parquet",
            "metrics.json",
            "per_user_test.parquet",
            "mlflow.json",
        ):
            assert (run / name).is_file(), run / name
        for stage in ("train", "evaluate", "track"):
            log = grid / "logs" / stage / "ml-100k" / model / "seed0.log"
            assert log.is_file() and log.stat().st_size > 0, log
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0 < metrics["test"]["ndcg_at_10"] < 1
    assert (workdir / "reports" / "summary.md").is_file() and (
        workdir / "reports" / "results_table.tex"
    ).is_file()
    for (
        s
    ) in submissions:  # each job's own output (the job script ran Snakemake for exactly that job)
        assert (workdir / "cluster" / f"{s['job']}.out").is_file()


def test_recorded_resources_equal_the_grid_declaration(loopback_grid):
    _, _, submissions = loopback_grid
    train = {s["wildcards"]["model"]: s for s in submissions if s["rule"] == "train"}
    (artifact,) = (s for s in submissions if s["rule"] == "item_text_lsa")
    assert {k: artifact["resources"][k] for k in ("gpu", "mem_mb", "runtime")} == {
        "gpu": 1, "mem_mb": 1700, "runtime": 17,
    }  # fmt: skip
    for entry in GRID["models"]:
        asked = train[entry["name"]]
        # the train rule's defaults
        declared = {"gpu": 0, "mem_mb": 4000, "runtime": 120} | entry.get("resources", {})
        assert {k: asked["resources"][k] for k in declared} == declared, entry["name"]
        assert asked["threads"] == entry.get("threads", 1)


def test_the_slurm_profile_maps_the_same_submissions_to_sbatch_flags(loopback_grid):
    """What profiles/slurm would submit for these jobs, built by the SLURM executor plugin."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["resources"] == {"mlflow": 1}

    class Resources(dict):
        __getattr__ = dict.__getitem__

    _, _, submissions = loopback_grid
    params = {
        "run_uuid": "x",
        "slurm_logfile": "x.log",
        "comment_str": "x",
        "account": "",
        "partition": "",
        "workdir": "",
    }
    calls = {}
    for s in (s for s in submissions if s["rule"] == "train"):
        job = SimpleNamespace(resources=Resources(s["resources"]), threads=s["threads"])
        calls[s["wildcards"]["model"]] = get_submit_command(job, params) + set_gres_string(job)
    assert (
        "--gpus=1" in calls["mostpop"]
        and "--mem 1500" in calls["mostpop"]
        and "-t 11" in calls["mostpop"]
    )
    assert "--gpus" not in calls["bpr"] and "--mem 2500" in calls["bpr"] and "-t 13" in calls["bpr"]
    assert "--cpus-per-task=2" in calls["bpr"] and "--cpus-per-task=1" in calls["mostpop"]
