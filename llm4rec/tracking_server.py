"""A shared MLflow tracking server: PostgreSQL as backend store, a local folder as artifact store.

    llm4rec tracking-server start [--dir results/tracking-server] [--port 5000] [--pg-port 5433]
                                  [--host 127.0.0.1]
    llm4rec tracking-server stop  [--dir results/tracking-server]
    (make tracking-server / make tracking-server-stop)

Everything lives under --dir: `pgdata/` (the database cluster; PostgreSQL's own `postmaster.pid`),
`artifacts/`, `mlflow.pid`, `postgres.log`, `mlflow.log`. Both servers bind to 127.0.0.1 unless
told otherwise; a server others can reach should run MLflow's basic-auth app (`--basic-auth`).
This module starts and stops processes; what is logged, and how, stays in `tracking.py`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DATABASE, DB_USER = "mlflow", "llm4rec"


class ServerError(RuntimeError):
    """The tracking server (or its database) could not start or stop; the message says why."""


@dataclass(frozen=True)
class TrackingServer:
    folder: Path
    host: str = "127.0.0.1"
    port: int = 5000
    pg_port: int = 5433

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def backend_store_uri(self) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.pg_port}/{DATABASE}"

    @property
    def pgdata(self) -> Path:
        return self.folder / "pgdata"

    @property
    def mlflow_pid_file(self) -> Path:
        return self.folder / "mlflow.pid"


def postgres_binary(name: str) -> str:
    """`initdb`, `pg_ctl`, ...: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if candidates:
        return str(candidates[-1])
    raise ServerError(
        f"PostgreSQL's '{name}' was not found (PATH or /usr/lib/postgresql/*/bin). `make "
        "tracking-server` installs Debian's postgresql when run as root; otherwise install it "
        "(apt-get install postgresql) or put its bin folder on PATH"
    )


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as Debian's 'postgres' user."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ServerError(
            f"{what} failed (exit {proc.returncode}): "
            f"{' '.join(cmd)}\n{(proc.stdout + proc.stderr)[-2000:]}"
        )
    return proc.stdout


def _check_reachable_by_postgres(folder: Path) -> None:
    if os.geteuid() != 0:
        return
    for parent in [folder, *folder.parents]:
        if parent.exists() and not os.stat(parent).st_mode & 0o001:
            raise ServerError(
                f"{folder}: PostgreSQL runs as user 'postgres', which cannot enter {parent} (mode "
                f"{oct(os.stat(parent).st_mode & 0o777)}); choose --dir elsewhere or `chmod o+x "
                f"{parent}`"
            )


def start_postgres(server: TrackingServer) -> None:
    """initdb (once), start the cluster on 127.0.0.1:<pg_port>, create the MLflow database."""
    server.folder.mkdir(parents=True, exist_ok=True)
    _check_reachable_by_postgres(server.folder)
    pgdata = server.pgdata
    if not (pgdata / "PG_VERSION").is_file():
        pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(pgdata, "postgres", "postgres")
        _run(
            _as_postgres_user(
                [
                    postgres_binary("initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    DB_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ]
            ),
            f"initdb {pgdata}",
        )
    log = server.folder / "postgres.log"
    if not log.exists():
        log.touch()
        if os.geteuid() == 0:
            shutil.chown(log, "postgres", "postgres")
    status = subprocess.run(
        _as_postgres_user([postgres_binary("pg_ctl"), "-D", str(pgdata), "status"]),
        capture_output=True,
    )
    if status.returncode != 0:  # not running (a stale postmaster.pid is handled by pg_ctl itself)
        options = f"-p {server.pg_port} -c listen_addresses=127.0.0.1 -k {pgdata}"
        try:
            _run(
                _as_postgres_user(
                    [
                        postgres_binary("pg_ctl"),
                        "-D",
                        str(pgdata),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        options,
                        "start",
                    ]
                ),
                f"starting PostgreSQL on 127.0.0.1:{server.pg_port}",
            )
        except ServerError as err:
            raise ServerError(f"{err}\n{log}:\n{log.read_text()[-1500:]}") from None
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=server.pg_port, user=DB_USER, dbname="postgres")
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        conn.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return True  # it answers (e.g. basic auth)
    except (urllib.error.URLError, OSError):
        return False


def start(server: TrackingServer, basic_auth: bool = False, timeout_s: float = 180) -> str:
    """Start PostgreSQL and `mlflow server` (if not already up); return the tracking URI."""
    start_postgres(server)
    pid_file = server.mlflow_pid_file
    if pid_file.is_file() and _alive(int(pid_file.read_text())) and _healthy(server.uri):
        print(
            f"[llm4rec] MLflow tracking server already running: {server.uri} (pid "
            f"{pid_file.read_text().strip()})"
        )
        return server.uri
    if server.host not in ("127.0.0.1", "localhost", "::1") and not basic_auth:
        print(
            f"[llm4rec] warning: the MLflow server listens on {server.host} without "
            "authentication; use --basic-auth (MLflow's basic-auth app) on a shared machine",
            file=sys.stderr,
        )
    artifacts = server.folder / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        server.backend_store_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--workers",
        "2",
        *(["--app-name", "basic-auth"] if basic_auth else []),
    ]
    log = server.folder / "mlflow.log"
    env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    with open(log, "ab") as out:
        # its own process group: stop() ends it and its workers
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pid_file.unlink(missing_ok=True)
            raise ServerError(
                f"mlflow server exited with {process.returncode}; {log}:\n{log.read_text()[-2000:]}"
            )
        if _healthy(server.uri):
            print(
                f"[llm4rec] MLflow tracking server {server.uri} (backend "
                f"{server.backend_store_uri}, artifacts {artifacts}, pid {process.pid}); use it "
                f"with: export MLFLOW_TRACKING_URI={server.uri}"
            )
            return server.uri
        time.sleep(0.5)
    stop_mlflow(server)
    raise ServerError(
        f"mlflow server did not answer on {server.uri}/health within {timeout_s:.0f}s; see {log}"
    )


def stop_mlflow(server: TrackingServer, grace_s: float = 20) -> bool:
    pid_file = server.mlflow_pid_file
    if not pid_file.is_file():
        return False
    pid = int(pid_file.read_text())
    if _alive(pid):
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
            except ChildProcessError:
                pass
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def stop(server: TrackingServer) -> None:
    """Stop `mlflow server` (mlflow.pid) and PostgreSQL (its postmaster.pid, via pg_ctl)."""
    stopped = ["mlflow server"] if stop_mlflow(server) else []
    if (server.pgdata / "postmaster.pid").is_file():
        _run(
            _as_postgres_user(
                [postgres_binary("pg_ctl"), "-D", str(server.pgdata), "-m", "fast", "-w", "stop"]
            ),
            f"stopping PostgreSQL ({server.pgdata})",
        )
        stopped.append("PostgreSQL")
    print(f"[llm4rec] stopped: {', '.join(stopped) or 'nothing was running'} ({server.folder})")
