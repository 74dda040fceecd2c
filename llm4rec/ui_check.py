"""What a researcher sees in MLflow's UI, checked in a real browser (`llm4rec ui-check`,
`make ui-check`).

Starts the MLflow UI on a free loopback port over a grid's store, opens the experiment's runs table
and the compare view of two runs in headless Chromium, saves both screenshots and checks the pages'
text: the runs table lists the runs with their dataset (name and split digest), the compare view
shows the chosen params (hp.*) with the models' display names. The REST API answers the same
questions in `tests/test_mlflow_ui.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llm4rec import layout
from llm4rec.config import Grid
from llm4rec.tracking import TrackingError, relocate_store

CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1800, 1000)


class UiCheckError(RuntimeError):
    """The UI did not show what it should; the message says what is missing, and the screenshot."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlflow_ui(backend_uri: str, log: Path, timeout: float = 120.0) -> Iterator[str]:
    """`mlflow server` over `backend_uri` on a free loopback port for the block; yields its URL."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow) if mlflow.exists() else "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = os.environ | {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise TrackingError(
                        f"the MLflow UI did not start on {base} (log: {log})"
                    ) from None
                time.sleep(0.5)
        yield base
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's runs table. MLflow 3.17 opens an experiment on the GenAI overview unless the
    UI's GenAI / Model training switch says otherwise: the query parameter sets it (and the browser
    remembers it)."""
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def rest(base: str, endpoint: str, body: dict | None = None, query: dict | None = None) -> dict:
    """One MLflow REST call (GET with `query`, POST with `body`)."""
    url = f"{base}/api/2.0/mlflow/{endpoint}" + (
        f"?{urllib.parse.urlencode(query)}" if query else ""
    )
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def experiment_runs(base: str, experiment: str) -> tuple[str, list[dict]]:
    """(experiment id, its live model runs, not the report's) as the REST API returns them."""
    found = rest(base, "experiments/get-by-name", query={"experiment_name": experiment})[
        "experiment"
    ]
    runs, token = [], None
    while True:
        body = {"experiment_ids": [found["experiment_id"]], "max_results": 1000} | (
            {"page_token": token} if token else {}
        )
        page = rest(base, "runs/search", body)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            break
    runs = [
        r
        for r in runs
        if {t["key"]: t["value"] for t in r["data"].get("tags", [])}.get("paradigm") != "report"
    ]
    return found["experiment_id"], runs


def params_of(run: dict) -> dict[str, str]:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metric_of(run: dict, key: str) -> float:
    return next(
        (m["value"] for m in run["data"].get("metrics", []) if m["key"] == key), float("-inf")
    )


def pick_pair(runs: list[dict], models: tuple[str, str] | None) -> list[dict]:
    """The two runs to compare: the named models (seed 0 when there are several), else the best
    baseline and the best other model by test NDCG@10."""
    by_model: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: params_of(r).get("seed", "")):
        by_model.setdefault(params_of(run)["model"], run)
    if models:
        missing = [m for m in models if m not in by_model]
        if missing:
            raise UiCheckError(
                f"no logged run of model '{missing[0]}' (logged: {', '.join(sorted(by_model))})"
            )
        return [by_model[m] for m in models]
    baselines = [r for r in by_model.values() if params_of(r)["paradigm"] == "baseline"]
    others = [r for r in by_model.values() if params_of(r)["paradigm"] != "baseline"]
    pools = [baselines, others] if baselines and others else [list(by_model.values())] * 2
    first = max(pools[0], key=lambda r: metric_of(r, "test_ndcg_at_10"))
    second = max(
        (r for r in pools[1] if r is not first),
        key=lambda r: metric_of(r, "test_ndcg_at_10"),
        default=None,
    )
    if second is None:
        raise UiCheckError("the experiment has fewer than two model runs to compare")
    return [first, second]


def chromium() -> str:
    for name in CHROMIUM:
        if path := shutil.which(name):
            return path
    raise UiCheckError(
        "Chromium not found: install Debian's chromium (make ui-check does, when run as root)"
    )


# The browser state a researcher has after one click: the "Model training" side of MLflow 3's
# GenAI / Model training switch (the UI takes the experiment kind from it, default GenAI;
# ?workflowType=... sets it too), and the assistant panel, which opens on a first visit, closed.
BROWSER_STATE = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.panelOpen_v1": "false",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
}


# Columns the runs table screenshot adds through the UI's own Columns menu (none by default).
RUNS_TABLE_COLUMNS = ("test_ndcg_at_10", "test_hr_at_10", "train_time_s", "inference_ms_per_user")


def show_columns(page, columns: tuple[str, ...]) -> None:
    """Tick `columns` in the runs table's Columns menu, as a researcher would. Cosmetic: the checks
    do not need them, so a menu that does not open in time leaves the table as it is."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        page.get_by_text("Columns", exact=True).first.click(timeout=30_000)
        page.wait_for_timeout(800)
        for label in columns:
            page.get_by_text(label, exact=True).first.click(timeout=10_000)
            page.wait_for_timeout(300)
    except PlaywrightError as err:
        print(
            f"[llm4rec] ui-check: could not add the columns {', '.join(columns)} "
            f"({str(err).splitlines()[0]})"
        )
    page.keyboard.press("Escape")


def screenshot_pages(
    pages: dict[str, tuple[str, str, int, tuple[str, ...]]], out_dir: Path
) -> dict[str, tuple[Path, str]]:
    """{name: (url, text to wait for, viewport height, runs-table columns to add)} -> {name:
    (screenshot, the page's visible text)}, in headless Chromium driven by Playwright."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UiCheckError(
            "Playwright is not installed: make ui-check installs it (pip install -e '.[ui]')"
        ) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    state = "".join(
        f"localStorage.setItem({json.dumps(k)}, {json.dumps(v)});" for k, v in BROWSER_STATE.items()
    )
    shots = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for name, (url, wait_for, height, columns) in pages.items():
                context = browser.new_context(viewport={"width": WINDOW[0], "height": height})
                context.add_init_script(state)
                page = context.new_page()
                page.goto(url)
                path = out_dir / f"mlflow_{name}.png"
                try:
                    page.get_by_text(wait_for).first.wait_for(timeout=90_000)
                except PlaywrightError:
                    page.screenshot(path=str(path))
                    raise UiCheckError(
                        f"{url}: '{wait_for}' did not appear within 90 s (screenshot: {path})"
                    ) from None
                if columns:
                    show_columns(page, columns)
                page.wait_for_timeout(2000)  # charts and column widths settle
                tmp = path.with_name(f".{path.name}.tmp.png")
                page.screenshot(path=str(tmp))
                tmp.replace(path)
                shots[name] = (path, page.inner_text("body"))
                context.close()
        finally:
            browser.close()
    return shots


def check_ui(grid: Grid, out_dir: Path, models: tuple[str, str] | None = None) -> dict[str, Path]:
    """Screenshots of the runs table and compare view in `out_dir`; UiCheckError names a gap."""
    uri = grid.tracking_uri()
    if uri.startswith("sqlite:///") and (grid.results_dir / layout.LOCAL_STORE).is_file():
        relocate_store(grid.results_dir)
    with mlflow_ui(uri, grid.results_dir / "logs" / "ui-check.log") as base:
        experiment_id, runs = experiment_runs(base, grid.experiment)
        if not runs:
            raise UiCheckError(
                f"experiment {grid.experiment} in {uri} has no runs (run the grid first: make "
                "bench)"
            )
        pair = pick_pair(runs, models)
        ids = [r["info"]["run_id"] for r in pair]
        pages = {
            "runs_table": runs_url(base, experiment_id),
            "compare_runs": f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
            f"&experiments={urllib.parse.quote(json.dumps([experiment_id]))}&workflowType=machine_learning",
        }
        shots = screenshot_pages(
            {
                "runs_table": (
                    pages["runs_table"],
                    pair[0]["info"]["run_name"],
                    1000,
                    RUNS_TABLE_COLUMNS,
                ),
                "compare_runs": (pages["compare_runs"], "hp.", 1900, ()),
            },
            out_dir,
        )
    expected = {
        "runs_table": ["Runs", "Dataset", "Duration"]
        + [r["info"]["run_name"] for r in runs[:5]]
        + [params_of(pair[0])["dataset"], _digest(pair[0])],
        "compare_runs": [params_of(r)["display_name"] for r in pair]
        + ["Parameters", "hp.", "budget.train", "Metrics"],
    }
    for name, needles in expected.items():
        path, text = shots[name]
        missing = [n for n in needles if n not in text]
        if missing:
            raise UiCheckError(
                f"{pages[name]}: the page does not show {missing} (screenshot: {path})"
            )
    return {name: path for name, (path, _) in shots.items()}


def _digest(run: dict) -> str:
    inputs = run.get("inputs", {}).get("dataset_inputs", [])
    return inputs[0]["dataset"]["digest"] if inputs else "(no dataset input)"
