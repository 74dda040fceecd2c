"""Data-parallel fine-tuning (llm4rec.llm.distributed): the same `llm4rec train` job on 2 processes
(gloo on CPU, launched by the CLI itself under torchrun because the model asks for `gpu: 2`) against
1 process with the same global batch. The loss curve agrees within float noise, the validation curve
and the rankings are equal, and process 0 alone wrote the run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .test_rerun import WORDS, write_dataset

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def grid(root: Path, name: str, gpus: int) -> dict:
    llm = {
        "backbone": {"name_or_path": str(root / "tiny-llama")},
        "text_retention": {"enabled": False},
        "valid_users": 10,
        "eval_every": 3,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
    }
    sft = {
        "steps": 6,
        "batch_size": 4,
        "grad_accum": 2,
        "learning_rate": 1e-2,
        "checkpoint_every": 3,
    }
    resources = {"resources": {"gpu": gpus}} if gpus > 1 else {}
    return {
        "name": name,
        "results_dir": str(root / "results"),
        "reports_dir": str(root / "reports"),
        "seeds": [0],
        "threads": 1,
        "evaluation": {"cutoffs": [5, 10]},
        "datasets": {
            "toy": {
                "source": "atomic",
                "path": str(root),
                "atomic_name": "toy",
                "k_core": {"user": 3, "item": 1},
                "text_fields": {
                    "title": "title",
                    "year": "year",
                    "genres": "genres",
                    "description": "description",
                },
            }
        },
        "models": [
            {
                "name": "text_prompted",
                "evaluation": {"cutoffs": [5, 10], "test_users": 16, "valid_users": 10},
                "params": llm
                | {
                    "prompt": {"system": None, "user": "items : {history}", "line": "{title} ;"},
                    "beam_width": 10,
                    "batch_users": 4,
                    "max_history": 3,
                    "sft": sft,
                },
            }
            | resources,
            {
                "name": "idiomoe",
                "params": llm
                | {
                    "instruction": "items :",
                    "expert_layers": "last_1",
                    "max_history": 6,
                    "batch_users": 8,
                    "sft": sft,
                },
            }
            | resources,
        ],
    }


def run(root: Path, name: str, gpus: int) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(grid(root, name, gpus)))
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "WORLD_SIZE")
    } | {"TQDM_DISABLE": "1"}
    cli = [sys.executable, "-m", "llm4rec.cli"]
    subprocess.run(
        [*cli, "prepare", "--config", str(path), "--dataset", "toy"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    for model in ("text_prompted", "idiomoe"):
        proc = subprocess.run(
            [
                *cli,
                "train",
                "--config",
                str(path),
                "--dataset",
                "toy",
                "--model",
                model,
                "--seed",
                "0",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        if gpus > 1:
            assert "2 GPUs: -m torch.distributed.run --standalone --nproc_per_node=2" in proc.stdout
    return root / "results" / name / "runs" / "toy"


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    from .helpers import tiny_backbone

    root = tmp_path_factory.mktemp("ddp")
    write_dataset(root)
    model, tokenizer = tiny_backbone(WORDS, seed=0, hidden=32, layers=2, init_std=0.1)
    model.save_pretrained(root / "tiny-llama")
    tokenizer.save_pretrained(root / "tiny-llama")
    return run(root, "one", 1), run(root, "two", 2)


@pytest.mark.parametrize("model", ["text_prompted", "idiomoe"])
def test_two_processes_follow_the_single_process_run(both, model):
    one, two = (runs / model / "seed0" for runs in both)
    fit = [json.loads((d / "run.json").read_text())["fit"] for d in (one, two)]
    assert len(fit[0]["sft_losses"]) == 6
    np.testing.assert_allclose(
        fit[1]["sft_losses"], fit[0]["sft_losses"], rtol=1e-5
    )  # float summation order aside
    assert (
        [p["step"] for p in fit[1]["valid_curve"]]
        == [p["step"] for p in fit[0]["valid_curve"]]
        == [3, 6]
    )
    np.testing.assert_allclose(
        [p["ndcg_at_10"] for p in fit[1]["valid_curve"]],
        [p["ndcg_at_10"] for p in fit[0]["valid_curve"]],
        rtol=1e-6,
    )
    for phase in ("valid", "test"):
        a, b = (pd.read_parquet(d / f"rankings_{phase}.parquet") for d in (one, two))
        pd.testing.assert_frame_equal(
            a[["user_id", "rank", "item_id"]], b[["user_id", "rank", "item_id"]]
        )
        np.testing.assert_allclose(b["score"], a["score"], rtol=1e-4, atol=1e-5)
    assert fit[1]["train_tokens"] == fit[0]["train_tokens"]  # tokens counted across both processes


def test_an_uneven_split_of_micro_batches_is_refused():
    import llm4rec.llm.distributed as distributed
    from llm4rec.llm.training import SFTConfig, train_sft

    original = distributed.world
    distributed.world = lambda: (0, 2)
    try:
        with pytest.raises(
            ValueError, match="sft.grad_accum is 3 with 2 processes: it must be a multiple"
        ):
            train_sft(None, [], SFTConfig(steps=1, grad_accum=3), 0, progress=False)
    finally:
        distributed.world = original
