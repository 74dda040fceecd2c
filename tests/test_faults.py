"""Faults on the tiny grid: a training job killed with SIGKILL midway (a RecBole baseline, then an
LLM fine-tune), the same Snakemake command again, and `llm4rec reproduce` as the uninterrupted
reference; plus an unwritable results folder and a full disk."""

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from .helpers import snakemake_command
from .helpers.grid import small_grid

REPO = Path(__file__).resolve().parents[1]
RUNS = Path("results") / "faults" / "runs" / "ml-100k"
pytestmark = pytest.mark.slow


def grid(backbone: Path) -> dict:
    # steerability on, so reproduce must recompute it (and the steered row's counterfactual
    # ranking) like every other metric
    return small_grid(
        "faults",
        [
            {"name": "bpr", "params": {"epochs": 12, "show_progress": False, "stopping_step": 100}},
            {
                "name": "cf_e4srec",
                "evaluation": {"valid_users": 20},
                "inputs": {"cf_source": {"run": "bpr"}},
                "params": {
                    "backbone": {"name_or_path": str(backbone)},
                    "prompt": {"user": "Movies watched :{history}", "answer_prefix": "Next :"},
                    "text_retention": {"enabled": False},
                    "max_history": 5,
                    "loss_positions": "all",
                    "sft": {"steps": 400, "batch_size": 16, "checkpoint_every": 20},
                    "valid_users": 20,
                    "eval_every": 100,
                },
            },
            # a variant and stage row (the ablation target): cf_e4srec's weights with the request
            {
                "name": "cf_e4srec_steer",
                "evaluation": {"valid_users": 20},
                "inputs": {"cf_source": {"run": "bpr"}, "policy": {"run": "cf_e4srec"}},
                "params": {"request": {"template": STEER_WORDING}},
            },
        ],
        steer={"templates": {"both": STEER_WORDING}},
    )


STEER_WORDING = "something from the {decade}: {genres}"


def snakemake_until(workdir: Path, model: str, ready) -> tuple[subprocess.Popen, bool]:
    """Start the grid, SIGKILL `model`'s train once ready(run_dir, log), wait for Snakemake."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "PYTHONUNBUFFERED": "1"
    }
    proc = subprocess.Popen(
        [
            *snakemake_command(workdir, workdir / "grid.yaml"),
            "--cores",
            "2",
            "--resources",
            "mlflow=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    run_dir, log = (
        workdir / RUNS / model / "seed0",
        workdir / "results" / "faults" / "logs" / "train" / "ml-100k" / model / "seed0.log",
    )
    killed, deadline = False, time.monotonic() + 600
    while not killed and proc.poll() is None and time.monotonic() < deadline:
        if ready(run_dir, log.read_text() if log.is_file() else ""):
            for p in psutil.Process(proc.pid).children(recursive=True):
                cmd = p.cmdline()
                if "llm4rec.cli" in cmd and "train" in cmd and model in cmd:
                    p.send_signal(signal.SIGKILL)
                    killed = True
        time.sleep(0.05)
    proc.output = proc.communicate(timeout=900)[0]
    return proc, killed


def mlflow_runs(workdir: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("llm4rec-faults")
    return client.search_runs([experiment.experiment_id])


def reproduce(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "llm4rec.cli", "reproduce", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


@pytest.fixture(scope="module")
def killed_grid(tmp_path_factory):
    from .helpers import tiny_backbone

    workdir = tmp_path_factory.mktemp("faults")
    backbone = workdir / "tiny-llama"
    model, tokenizer = tiny_backbone(["Movies", "watched", ":", "Next"], seed=0, layers=1)
    model.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    (workdir / "grid.yaml").write_text(yaml.safe_dump(grid(backbone)))
    # 1. the RecBole job dies a few epochs in
    first, killed_bpr = snakemake_until(workdir, "bpr", lambda run, log: "epoch 3 training" in log)
    # 2. the same command: bpr trains again; the LLM fine-tune dies after its first checkpoints
    second, killed_llm = snakemake_until(
        workdir, "cf_e4srec", lambda run, log: (run / "work" / "sft" / "last").is_dir()
    )
    step = 0
    state = workdir / RUNS / "cf_e4srec" / "seed0" / "work" / "sft" / "last" / "state.pt"
    if state.is_file():
        import torch

        step = torch.load(state, weights_only=True)["step"]
    # 3. the same command once more: the fine-tune resumes from its checkpoint, the grid completes
    # (and its ablation target: the steered row)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    third = subprocess.run(
        [
            *snakemake_command(workdir, workdir / "grid.yaml")[:-2],
            "all",
            "ablations",
            *snakemake_command(workdir, workdir / "grid.yaml")[-2:],
            "--cores",
            "2",
            "--resources",
            "mlflow=1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    return workdir, (first, killed_bpr), (second, killed_llm, step), third


def test_a_killed_job_fails_its_snakemake_run_and_the_same_command_completes_the_grid(killed_grid):
    workdir, (first, killed_bpr), (second, killed_llm, step), third = killed_grid
    assert killed_bpr and first.returncode != 0 and "rule train" in first.output
    assert (
        not (workdir / RUNS / "bpr" / "seed0" / "run.json").exists()
        or second.returncode is not None
    )
    assert killed_llm and second.returncode != 0
    assert 0 < step < 400  # killed midway, after a checkpoint
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    log = (
        workdir / "results" / "faults" / "logs" / "train" / "ml-100k" / "cf_e4srec" / "seed0.log"
    ).read_text()
    assert f"resuming SFT from the checkpoint at step {step}/400" in log
    for model in ("bpr", "cf_e4srec"):
        assert (workdir / RUNS / model / "seed0" / "metrics.json").is_file()
    runs = mlflow_runs(workdir)
    # one active run per cell, and the main and ablation reports
    assert sorted(r.data.tags["model"] for r in runs) == [
        "bpr",
        "cf_e4srec",
        "cf_e4srec_steer",
        "report",
        "report",
    ]


def test_the_killed_runs_equal_uninterrupted_runs(killed_grid):
    """`llm4rec reproduce` trains each from scratch, uninterrupted (bpr too: the LLM's input)."""
    workdir = killed_grid[0]
    for model in ("bpr", "cf_e4srec"):
        proc = reproduce(workdir, str(RUNS / model / "seed0"), "--scratch", f"scratch_{model}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert (
            f"reproduce {model}/ml-100k/seed0:" in proc.stdout
            and "weights: bit-identical" in proc.stdout
        )
        report = json.loads((workdir / f"scratch_{model}" / "reproduce.json").read_text())
        assert report["within_tolerance"] and all(m["abs_diff"] == 0 for m in report["metrics"])
        assert {m["verdict"] for m in report["metrics"]} == {"bit-identical"}
        assert {m["metric"] for m in report["metrics"]} >= {"test_ndcg_at_10", "valid_hr_at_5"}
    # the consumer again, on the recorded upstream files (bpr not retrained): same numbers
    proc = reproduce(
        workdir,
        str(RUNS / "cf_e4srec" / "seed0"),
        "--scratch",
        "scratch_recorded",
        "--upstream",
        "recorded",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (
        "consuming the recorded upstream as it is" in proc.stdout
        and "training bpr" not in proc.stdout
    )
    report = json.loads((workdir / "scratch_recorded" / "reproduce.json").read_text())
    assert {m["verdict"] for m in report["metrics"]} == {"bit-identical"} and report[
        "weights"
    ].startswith("bit-identical")


def test_a_steered_variant_reproduces_with_its_steerability(killed_grid):
    """The steered row (a variant, a stage on cf_e4srec's policy, a reader of requests) rebuilt on
    its recorded upstream: every metric it records, the steerability of both requests included,
    comes out bit-identical."""
    workdir = killed_grid[0]
    folder = RUNS / "cf_e4srec_steer" / "seed0"
    recorded = json.loads((workdir / folder / "metrics.json").read_text())
    assert {"cf_steer_both_at_10", "filtered_both_ndcg_at_10", "lift_both_at_10"} <= set(
        recorded["test"]
    )
    proc = reproduce(workdir, str(folder), "--scratch", "scratch_steer", "--upstream", "recorded")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((workdir / "scratch_steer" / "reproduce.json").read_text())
    assert {m["verdict"] for m in report["metrics"]} == {"bit-identical"}
    names = {m["metric"] for m in report["metrics"]}
    assert {"test_cf_steer_both_at_10", "test_steer_both_at_10", "test_chance_both"} <= names
    rebuilt = workdir / "scratch_steer" / "results" / "faults" / "runs" / "ml-100k"
    assert (
        rebuilt / "cf_e4srec_steer" / "seed0" / "rankings_test_counterfactual.parquet"
    ).is_file()


def test_reproduce_by_mlflow_id_and_a_difference_beyond_tolerance(killed_grid):
    workdir = killed_grid[0]
    run_id = json.loads((workdir / RUNS / "bpr" / "seed0" / "mlflow.json").read_text())["run_id"]
    proc = reproduce(
        workdir,
        run_id,
        "--tracking-uri",
        f"sqlite:///{workdir / 'results' / 'mlflow.db'}",
        "--scratch",
        "by_id",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # NDCG@10 off by 0.001 in the record: nonzero exit, metric flagged; with tolerance 0.01: fine
    edited = workdir / "edited" / "runs" / "ml-100k" / "bpr" / "seed0"
    shutil.copytree(
        workdir / RUNS / "bpr" / "seed0", edited, ignore=shutil.ignore_patterns("work", "exports")
    )
    metrics = json.loads((edited / "metrics.json").read_text())
    metrics["test"]["ndcg_at_10"] += 0.001
    (edited / "metrics.json").write_text(json.dumps(metrics))
    proc = reproduce(workdir, str(edited), "--scratch", "edited_scratch")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    flagged = [line for line in proc.stdout.splitlines() if line.startswith("! test_ndcg_at_10")]
    # the users' values are all equal: no float noise explains it
    assert flagged and flagged[0].endswith("different")
    assert "environment: same git commit, packages, device and threads" in proc.stdout
    proc = reproduce(workdir, str(edited), "--scratch", "edited_scratch2", "--tolerance", "0.01")
    assert proc.returncode == 0, proc.stdout[-2000:]


def _prepare(workdir: Path, preexec=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "llm4rec.cli",
            "prepare",
            "--config",
            "grid.yaml",
            "--dataset",
            "ml-100k",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        preexec_fn=preexec,
    )


def _tiny_grid(workdir: Path) -> Path:
    (workdir / "grid.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "disk",
                "seeds": [0],
                "datasets": {"ml-100k": {"source": "ml-100k"}},
                "models": [{"name": "mostpop"}],
            }
        )
    )
    return workdir / "results" / "disk" / "data" / "ml-100k"


def test_a_full_disk_fails_naming_the_file_and_leaves_nothing_half_written(tmp_path):
    split = _tiny_grid(tmp_path)

    def small_disk():  # writes beyond 64 KiB fail (EFBIG), as on a full disk (ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    proc = _prepare(tmp_path, small_disk)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        f"error: cannot write {split.relative_to(tmp_path)}/" in proc.stderr
        and "nothing was written there" in proc.stderr
    )
    written = [p.name for p in split.iterdir()] if split.exists() else []
    assert not [n for n in written if n.endswith(".tmp")]  # no temp file left behind
    # the split's completion marker is written last, so never for a partial split
    assert "split.json" not in written


def test_an_unwritable_results_folder_fails_naming_it(tmp_path):
    split = _tiny_grid(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    mounted = False
    # root writes through permissions: make the folder a read-only bind mount instead
    if os.geteuid() == 0:
        bind = subprocess.run(
            ["mount", "--bind", str(results), str(results)], capture_output=True, text=True
        )
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(results)], capture_output=True, text=True
        )
        mounted = bind.returncode == 0
        if bind.returncode != 0 or remount.returncode != 0:
            if mounted:
                subprocess.run(["umount", str(results)])
            pytest.skip(
                "running as root without mount rights, so no folder is unwritable here: "
                f"{bind.stderr or remount.stderr}"
            )
    try:
        proc = _prepare(tmp_path)
    finally:
        if mounted:
            subprocess.run(["umount", str(results)], check=True)
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert "error: cannot write results/disk" in proc.stderr, proc.stderr[-2000:]
    assert "Permission denied" in proc.stderr or "Read-only file system" in proc.stderr
    assert not split.exists()
