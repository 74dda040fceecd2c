"""The shared tracking path: `llm4rec tracking-server` (PostgreSQL backend store + `mlflow server`
on loopback ports) and a small grid logging to it through MLFLOW_TRACKING_URI, including the grid
running while the server is down (the tracking step fails naming the URI; the rerun logs only the
missing runs, never a duplicate)."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from llm4rec.tracking_server import ServerError, postgres_binary

from .helpers import snakemake_command
from .helpers.grid import small_grid

REPO = Path(__file__).resolve().parents[1]
GRID = small_grid(
    "ts",
    [{"name": "mostpop"}, {"name": "bpr", "params": {"epochs": 1, "show_progress": False}}],
)
CELLS = {(m, "0") for m in ("mostpop", "bpr")}
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_or_skip() -> None:
    try:
        postgres_binary("initdb")
    except ServerError as err:  # `make test` installs Debian's postgresql when run as root
        pytest.skip(f"PostgreSQL cannot be installed here: {err}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _postgres_or_skip()
    # reachable by the 'postgres' user
    folder = Path(tempfile.mkdtemp(prefix="llm4rec-tracking-", dir="/tmp"))
    folder.chmod(0o755)
    ports = {"port": free_port(), "pg_port": free_port()}
    cli = [sys.executable, "-m", "llm4rec.cli", "tracking-server"]
    args = [
        "--dir",
        str(folder / "server"),
        "--port",
        str(ports["port"]),
        "--pg-port",
        str(ports["pg_port"]),
    ]
    yield {
        "uri": f"http://127.0.0.1:{ports['port']}",
        "start": cli + ["start", *args],
        "stop": cli + ["stop", *args],
        "folder": folder / "server",
    }
    subprocess.run(cli + ["stop", *args], capture_output=True, timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


def snakemake(workdir: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"MLFLOW_TRACKING_URI": uri}
    return subprocess.run(
        [
            *snakemake_command(workdir, workdir / "grid.yaml"),
            "--cores",
            "2",
            "--resources",
            "mlflow=1",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def active_runs(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("llm4rec-ts")
    return client.search_runs([experiment.experiment_id])  # active runs only (the default view)


@pytest.fixture(scope="module")
def grid_on_server(server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grid")
    (workdir / "grid.yaml").write_text(yaml.safe_dump(GRID))
    # 1. the server is down while the grid runs
    down = snakemake(workdir, server["uri"], "--keep-going")
    down.files = sorted(
        str(f.relative_to(workdir)) for f in (workdir / "results").rglob("*") if f.is_file()
    )
    # 2. the server comes up; the same command again
    started = subprocess.run(server["start"], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    mtimes = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("run.json")}
    up = snakemake(workdir, server["uri"])
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    return workdir, down, up, mtimes


def test_tracking_fails_naming_the_uri_while_the_server_is_down(server, grid_on_server):
    workdir, down, _, _ = grid_on_server
    assert down.returncode != 0
    assert f"MLflow tracking server {server['uri']} cannot be reached" in down.stdout + down.stderr
    for model, seed in CELLS:  # the per-run files are complete; only the MLflow mirror is missing
        run = workdir / "results" / "ts" / "runs" / "ml-100k" / model / f"seed{seed}"
        for name in ("run.json", "metrics.json", "per_user_test.parquet", "rankings_test.parquet"):
            assert str((run / name).relative_to(workdir)) in down.files, run / name
        assert str((run / "mlflow.json").relative_to(workdir)) not in down.files
    assert not any(".tmp" in f for f in down.files)  # no half-written file


def test_the_rerun_logs_only_the_missing_runs_one_active_run_per_cell(server, grid_on_server):
    workdir, _, up, mtimes = grid_on_server
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # nothing retrained
    assert "rule train:" not in up.stdout + up.stderr
    runs = active_runs(server["uri"])
    cells = sorted(
        (r.data.tags["model"], r.data.tags["seed"])
        for r in runs
        if r.data.tags["paradigm"] != "report"
    )
    assert cells == sorted(CELLS)  # exactly one active run per (dataset, model, seed)
    assert sum(r.data.tags["paradigm"] == "report" for r in runs) == 1
    assert {r.data.tags["dataset"] for r in runs if r.data.tags["paradigm"] != "report"} == {
        "ml-100k"
    }
    # tracking a cell again reuses its run; a full rerun has nothing to do
    env = os.environ | {"MLFLOW_TRACKING_URI": server["uri"]}
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "llm4rec.cli",
            "track",
            "--config",
            "grid.yaml",
            "--dataset",
            "ml-100k",
            "--model",
            "bpr",
            "--seed",
            "0",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert len(active_runs(server["uri"])) == len(runs)
    assert "Nothing to be done" in snakemake(workdir, server["uri"], "-n").stdout


def test_the_report_from_the_server_equals_the_report_from_the_run_folders(server, grid_on_server):
    workdir, _, _, _ = grid_on_server
    env = os.environ | {"MLFLOW_TRACKING_URI": server["uri"]}
    # the one check that a report rebuilt from MLflow's runs is the report of the run folders
    # (tests/test_tracking.py checks one run's round trip; test_workflow no longer repeats this)
    server_runs = ["--mlflow-experiment", "llm4rec-ts", "--tag", "dataset=ml-100k"]
    for source, extra in (("folders", []), ("server", server_runs)):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "llm4rec.cli",
                "report",
                "--config",
                "grid.yaml",
                "--no-mlflow",
                "--out",
                f"rebuilt_{source}",
                *extra,
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("results_table.csv", "cost_table.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(workdir / "rebuilt_folders" / name),
            pd.read_csv(workdir / "rebuilt_server" / name),
        )
    rebuilt = pd.read_csv(workdir / "rebuilt_server" / "results_table.csv")
    assert set(rebuilt["model"]) == {model for model, _ in CELLS}
    assert (workdir / "rebuilt_folders" / "results_table.tex").read_text() == (
        workdir / "rebuilt_server" / "results_table.tex"
    ).read_text()


def test_the_server_stops_by_its_pid_files_and_binds_to_loopback(server, grid_on_server):
    folder = server["folder"]
    assert (folder / "mlflow.pid").is_file() and (folder / "pgdata" / "postmaster.pid").is_file()
    pid = int((folder / "mlflow.pid").read_text())
    listening = (
        subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
        if shutil.which("ss")
        else ""
    )
    for line in listening.splitlines():
        if f"pid={pid}," in line:
            assert "127.0.0.1:" in line, line
    stopped = subprocess.run(server["stop"], capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert "mlflow server, PostgreSQL" in stopped.stdout
    assert (
        not (folder / "mlflow.pid").exists() and not (folder / "pgdata" / "postmaster.pid").exists()
    )
    with pytest.raises(OSError):
        os.kill(pid, 0)
