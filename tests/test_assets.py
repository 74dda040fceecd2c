"""Hub assets for offline jobs (llm4rec.assets, `llm4rec fetch`): which grids name any, that each is
pinned, and that with HF_HUB_OFFLINE=1 a job whose asset is not in the cache refuses to start,
naming it; a cache holding the pinned snapshot satisfies the check. No download happens here: the
cache is built by hand in Hugging Face's layout."""

import os
import subprocess
import sys
from pathlib import Path

from llm4rec.assets import hub_assets
from llm4rec.config import load_grid

REPO = Path(__file__).resolve().parents[1]
QWEN, REVISION = "Qwen/Qwen2.5-0.5B-Instruct", "7ae557604adf67be50417f59c2c2f167def9a775"


def test_the_offline_grids_name_no_hub_asset_and_the_paper_grid_pins_each():
    for grid in ("default", "new_items", "anchors"):
        assert hub_assets(load_grid(REPO / "benchmarks" / f"{grid}.yaml")) == [], grid
    assets = hub_assets(load_grid(REPO / "benchmarks" / "paper.yaml"))
    assert [(a.repo_id, a.revision) for a in assets] == [(QWEN, REVISION)]
    assert {"model text_prompted", "artifact llm_states", "artifact item_text_embeddings"} <= set(
        assets[0].used_by
    )


def llm4rec(*args: str, hf_home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env |= {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "llm4rec.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_a_job_without_its_asset_refuses_to_start_and_a_cached_snapshot_satisfies_it(tmp_path):
    hf_home = tmp_path / "hf"
    paper = str(REPO / "benchmarks" / "paper.yaml")
    check = llm4rec("fetch", "--config", paper, "--check", hf_home=hf_home)
    assert check.returncode == 2
    assert f"{QWEN} at revision {REVISION}" in check.stderr
    assert f"llm4rec fetch --config {paper}" in check.stderr
    train = llm4rec(
        "train", "--config", paper, "--dataset", "ml-100k", "--model", "text_prompted",
        "--seed", "0", hf_home=hf_home,
    )  # fmt: skip
    assert train.returncode == 2, train.stdout + train.stderr
    assert "HF_HUB_OFFLINE is set" in train.stderr and QWEN in train.stderr
    assert (
        f"Fetch them where there is network first: llm4rec fetch --config {paper}" in train.stderr
    )
    # the pinned snapshot in the cache, as snapshot_download leaves it
    snapshot = hf_home / "hub" / f"models--{QWEN.replace('/', '--')}" / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    check = llm4rec("fetch", "--config", paper, "--check", hf_home=hf_home)
    assert check.returncode == 0, check.stderr
    assert "in the cache" in check.stdout
