"""Data-parallel fine-tuning (llm4rec.llm.distributed): the same `llm4rec train` job on 2 processes
(gloo on CPU, launched by the CLI itself under torchrun because the model asks for `gpu: 2`) against
1 process with the same global batch, LoRA dropout on. The loss curve agrees within float noise, the
validation curve and the rankings are equal, and process 0 alone wrote the run. Below it, the parts
on 2 spawned gloo processes: dropout, resume, and a parameter without a gradient."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from .helpers.rerun import WORDS, write_dataset

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def grid(root: Path, name: str, gpus: int) -> dict:
    llm = {
        "backbone": {"name_or_path": str(root / "tiny-llama")},
        "text_retention": {"enabled": False},
        "valid_users": 10,
        "eval_every": 3,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.1},  # dropout on: seeded per micro-batch
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
                    "prompt": {"user": "items :{history}"},
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
    # float summation order aside
    np.testing.assert_allclose(fit[1]["sft_losses"], fit[0]["sft_losses"], rtol=1e-5)
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


def _train_on(rank: int, size: int, port: int, folder: str, runs: list) -> None:
    """One process of a `size`-process group (gloo): each (steps, tag) of `runs` in turn trains a
    tiny Llama with attention dropout 0.3 from the same start, checkpointing into folder/tag;
    process 0 saves the trained weights and the losses to folder/<tag>.pt."""
    import torch
    import torch.distributed as dist

    from llm4rec.llm.training import SFTConfig, train_sft

    from .helpers import tiny_backbone

    torch.set_num_threads(1)
    if size > 1:
        os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        dist.init_process_group("gloo", rank=rank, world_size=size)
    model, _ = tiny_backbone([f"w{i}" for i in range(20)], seed=0, hidden=32, layers=2)
    model.config.attention_dropout = 0.3
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.3
    examples = [([4 + (i + j) % 20 for j in range(6)], [4 + (i + j + 1) % 20 for j in range(6)])
                for i in range(16)]  # fmt: skip
    for steps, tag in runs:
        cfg = SFTConfig(steps=steps, batch_size=2, grad_accum=2, learning_rate=1e-2,
                        checkpoint_every=2, seed=0)  # fmt: skip
        result = train_sft(model, examples, cfg, 0, Path(folder) / tag, progress=False)
        if rank == 0:
            state = {n: p.detach().clone() for n, p in model.named_parameters()}
            torch.save({"weights": state, "losses": result.losses}, Path(folder) / f"{tag}.pt")
    if size > 1:
        dist.destroy_process_group()


def _spawn(size: int, folder: Path, runs: list, port: int) -> None:
    import torch.multiprocessing as mp

    if size == 1:
        _train_on(0, 1, port, str(folder), runs)
    else:
        mp.spawn(_train_on, args=(size, port, str(folder), runs), nprocs=size, join=True)


def test_dropout_on_two_processes_equals_one_and_a_resumed_run_equals_an_uninterrupted_one(
    tmp_path,
):
    """With dropout on: micro-batch m draws the same masks on whichever process runs it, so 2
    processes train what 1 does (float summation order aside), and 2 processes stopped after 2 of
    4 steps and resumed from their checkpoint end where an uninterrupted run does."""
    import torch

    _spawn(1, tmp_path / "one", [(4, "whole")], 29511)
    _spawn(2, tmp_path / "two", [(4, "whole")], 29512)
    _spawn(2, tmp_path / "resumed", [(2, "part"), (4, "part")], 29513)
    one, two, resumed = (
        torch.load(tmp_path / run / f"{tag}.pt")
        for run, tag in (("one", "whole"), ("two", "whole"), ("resumed", "part"))
    )
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    assert resumed["losses"] == pytest.approx(two["losses"][2:], rel=1e-6)
    for name, weight in one["weights"].items():
        torch.testing.assert_close(two["weights"][name], weight, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(resumed["weights"][name], two["weights"][name], atol=0, rtol=0)


def test_a_parameter_without_a_gradient_anywhere_keeps_none(tmp_path):
    """all_reduce_gradients on 2 processes: a gradient on one process is summed with the other's
    zero; a parameter with no gradient on either keeps grad None (AdamW skips it, as 1 process
    would; a zero gradient would decay it and step its moments)."""
    import torch.multiprocessing as mp

    mp.spawn(_reduce_on, args=(29514, str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "ok0").is_file() and (tmp_path / "ok1").is_file()


def _reduce_on(rank: int, port: int, folder: str) -> None:
    import torch
    import torch.distributed as dist

    from llm4rec.llm import distributed

    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=2)
    only_rank_0, nowhere, both = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
    if rank == 0:
        only_rank_0.grad = torch.tensor([1.0, 2.0, 3.0])
    both.grad = torch.full((3,), float(rank + 1))
    distributed.all_reduce_gradients([only_rank_0, nowhere, both])
    assert only_rank_0.grad.tolist() == [1.0, 2.0, 3.0]
    assert nowhere.grad is None
    assert both.grad.tolist() == [3.0, 3.0, 3.0]
    dist.destroy_process_group()
    (Path(folder) / f"ok{rank}").write_text("")
