"""Reruns are bit-identical, for every registered model: the whole tiny grid below trained twice, in
two separate processes that run side by side (so they compete for the two cores, as a rerun next to
other work does) under different PYTHONHASHSEED values, gives the same rankings, per-user metrics
and final weights (sha256 of the state dict), and the same semantic-ID code table.

The guarantee is "same code, same config, same machine kind and thread count". Before the harness
turned on deterministic algorithms, IDIOMoE broke it: the backward of its item-embedding gather
adds rows with racing threads (llm4rec.determinism).
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from llm4rec.io import read_json
from llm4rec.models import MODELS

from .helpers.rerun import REPO, WORDS, write_dataset

pytestmark = pytest.mark.slow


def grid(data: Path, backbone: Path) -> dict:
    llm = {
        "backbone": {"name_or_path": str(backbone)},
        "text_retention": {"enabled": False},
        "valid_users": 10,
        "eval_every": 3,
    }
    lora = {"rank": 4, "alpha": 8, "dropout": 0.1}
    sft = {"steps": 6, "batch_size": 8, "learning_rate": 1e-2, "checkpoint_every": 3}
    decoded = {"cutoffs": [5, 10], "test_users": 16, "valid_users": 10}
    exact = {"cutoffs": [5, 10], "test_users": 4, "valid_users": 1}  # within the parent's users
    grpo = {
        "steps": 2,
        "prompts_per_step": 4,
        "group_size": 4,
        "valid_users": 10,
        "eval_every": 2,
        "checkpoint_every": 2,
    }
    prompted = llm | {
        "prompt": {"system": None, "user": "items : {history}", "line": "{title} ;"},
        "beam_width": 10,
        "lora": lora,
        "max_history": 3,
        "sft": sft,
    }
    e4srec = llm | {
        "instruction": "items :",
        "response": "next :",
        "max_history": 6,
        "lora": lora,
        "sft": sft,
    }
    # 64 windows of 20 item tokens x 64 dims: the gather's backward is large enough for ATen to run
    # it on 2 threads
    idiomoe = llm | {
        "instruction": "items :",
        "expert_layers": "last_1",
        "max_history": 20,
        "sft": sft | {"batch_size": 64, "steps": 8},
        "max_train_examples": None,
    }
    codes = {
        "quantizer": "rq_vae",
        "levels": 2,
        "codebook_size": 4,
        "encoder": {"fields": ["title", "year", "genres"]},
        "rq_vae": {"hidden": [32], "latent_dim": 8, "epochs": 20, "batch_size": 16},
    }
    tiger = {
        "t5": {
            "d_model": 16,
            "d_ff": 32,
            "num_heads": 2,
            "d_kv": 8,
            "encoder_layers": 1,
            "decoder_layers": 1,
        },
        "max_history": 5,
        "sft": sft | {"batch_size": 32},
        "beam_width": 10,
        "valid_users": 10,
        "eval_every": 3,
    }
    sid_llm = llm | {
        "instruction": "items :",
        "answer_prefix": "next :",
        "max_history": 4,
        "beam_width": 10,
        "lora": lora,
        "sft": sft,
    }
    recbole = {"show_progress": False}
    sasrec = {"epochs": 2, "max_len": 5, "hidden_size": 16, "inner_size": 32, "n_layers": 1}
    alpharec = {"epochs": 3, "negatives": 8, "batch_size": 64, "mlp_hidden": 32, "dim": 16}
    llm_text = {
        "artifact": "item_text_embeddings",
        "params": {"kind": "backbone", "model": str(backbone)},
    }
    states = {
        "artifact": "llm_states",
        "params": {
            "backbone": {"name_or_path": str(backbone)},
            "header": "items :",
            "separator": ";",
            "window": 4,
        },
    }
    rta = {"epochs": 3, "batch_size": 32, "adapt": {"epochs": 3}}
    toy = {
        "source": "atomic",
        "path": str(data),
        "atomic_name": "toy",
        "k_core": {"user": 3, "item": 1},
        "new_items": 0.1,  # items never in training: what the cold-start row retrieves
        "text_fields": {
            "title": "title",
            "year": "year",
            "genres": "genres",
            "description": "description",
        },
    }
    return {
        "name": "rerun",
        "results_dir": "results",
        "reports_dir": "reports",
        "seeds": [0],
        "threads": 2,
        # steerability on: the rows that read requests also rank with counterfactual ones
        "evaluation": {
            "cutoffs": [5, 10],
            "steer": {"templates": {"both": "something from the {decade}: {genres}"}},
        },
        "datasets": {
            "toy": toy,
            # what the zero-shot row transfers from: a 30-user slice of the same files
            "toy-source": toy | {"role": "source", "sample_users": 30},
        },
        "models": [
            {"name": "mostpop"},
            {"name": "bpr", "params": recbole | {"epochs": 2}},
            {"name": "lightgcn", "params": recbole | {"epochs": 2, "n_layers": 1}},
            {"name": "sasrec", "params": sasrec},
            {"name": "sasrec_ce", "params": sasrec},
            {
                "name": "sasrec_recbole",
                "params": recbole
                | {
                    "epochs": 1,
                    "MAX_ITEM_LIST_LENGTH": 5,
                    "hidden_size": 16,
                    "inner_size": 32,
                    "n_layers": 1,
                    "n_heads": 2,
                },
            },
            {"name": "emb_knn"},
            {"name": "text_prompted_zeroshot", "evaluation": decoded, "params": prompted},
            {"name": "text_prompted", "evaluation": decoded, "params": prompted},
            {
                "name": "cf_llara",
                "evaluation": decoded,
                "params": prompted | {"cf": {"projector": "mlp"}},
            },
            {
                "name": "cf_llara_permuted",
                "evaluation": decoded,
                "params": prompted | {"cf": {"projector": "mlp"}},
            },
            {"name": "cf_e4srec", "params": e4srec},
            {
                "name": "cf_e4srec_allpos",
                "params": {k: v for k, v in e4srec.items() if k != "response"},
            },
            {"name": "cf_e4srec_permuted", "params": e4srec},
            {"name": "idiomoe", "params": idiomoe},
            {"name": "idiomoe_popprior", "params": idiomoe},
            {"name": "idiomoe_learned_router", "params": idiomoe},
            {"name": "idiomoe_entangled", "params": idiomoe | {"expert_layers": "none"}},
            {"name": "idiomoe_requests", "params": idiomoe},
            {
                "name": "sid_tiger",
                "inputs": {"codes": {"artifact": "semantic_ids", "params": codes}},
                "params": tiger,
            },
            {
                "name": "sid_random",
                "inputs": {
                    "codes": {"artifact": "semantic_ids", "params": codes | {"quantizer": "random"}}
                },
                "params": tiger,
            },
            {
                "name": "sid_llm",
                "evaluation": decoded,
                "inputs": {"codes": {"artifact": "semantic_ids", "params": codes}},
                "params": sid_llm,
            },
            {"name": "alpharec", "params": alpharec},
            {"name": "alpharec_linear", "params": alpharec},
            {"name": "alpharec_linear_llm", "inputs": {"text": llm_text}, "params": alpharec},
            {"name": "alpharec_intent", "params": alpharec},
            {
                "name": "alpharec_zeroshot",
                "inputs": {"source": {"run": "alpharec", "dataset": "toy-source"}},
                "params": alpharec,
            },
            {"name": "alpharec_untrained", "params": alpharec},
            {"name": "alpharec_linear_untrained", "params": alpharec},
            {"name": "rta_reindex", "inputs": {"states": states}, "params": rta},
            {"name": "rta_bias", "inputs": {"states": states}, "params": rta},
            {"name": "rta_recsys", "inputs": {"states": states}, "params": rta},
            # the RL stages on their parents' exported policies (the same inputs as the parent)
            {
                "name": "text_prompted_grpo",
                "evaluation": decoded,
                "params": grpo | {"constrained": False, "rewards": {"hit": 1.0, "validity": 0.1}},
            },
            {
                "name": "sid_tiger_grpo",
                "inputs": {"codes": {"artifact": "semantic_ids", "params": codes}},
                "params": grpo | {"sampler": "beam", "rewards": {"hit": 1.0, "rank_penalty": 1.0}},
            },
            {
                "name": "sid_llm_grpo",
                "evaluation": decoded,
                "inputs": {"codes": {"artifact": "semantic_ids", "params": codes}},
                "params": grpo,
            },
            # the steered rows (the parent's policy, the request in the prompt) and the
            # exact-ranking rows (the parent's policy, a catalogue-wide beam)
            {"name": "text_prompted_zeroshot_steer", "evaluation": decoded},
            {"name": "text_prompted_steer", "evaluation": decoded},
            {"name": "cf_llara_steer", "evaluation": decoded},
            {"name": "cf_e4srec_steer"},
            {"name": "idiomoe_steer"},
            {"name": "idiomoe_requests_steer"},
            {
                "name": "sid_llm_steer",
                "evaluation": decoded,
                "inputs": {"codes": {"artifact": "semantic_ids", "params": codes}},
            },
            {"name": "rta_reindex_steer", "inputs": {"states": states}, "params": rta},
            {"name": "text_prompted_exact", "evaluation": exact},
            {"name": "cf_llara_exact", "evaluation": exact},
            {
                "name": "sid_llm_exact",
                "evaluation": exact,
                "inputs": {"codes": {"artifact": "semantic_ids", "params": codes}},
            },
            {
                "name": "sid_tiger_exact",
                "evaluation": exact,
                "inputs": {"codes": {"artifact": "semantic_ids", "params": codes}},
            },
            {
                "name": "sid_tiger_coldstart",
                "inputs": {"codes": {"artifact": "semantic_ids", "params": codes}},
                "params": {"epsilon": 0.5},
            },
        ],
    }


def replica(grid_path: str) -> None:
    """The whole grid in this one process: prepare, artifacts, then every model in grid order
    (upstream runs first), trained, ranked and evaluated."""
    from llm4rec.config import load_grid
    from llm4rec.runner import build_artifact, evaluate_run, prepare_dataset, train_and_rank

    grid = load_grid(grid_path)
    for dataset in grid.datasets:
        prepare_dataset(grid, dataset)
    for dataset, name, key in sorted(grid.artifacts()):
        build_artifact(grid, dataset, name, key)
    for dataset, model, seed in grid.source_runs() + grid.runs():  # transferred-from runs first
        train_and_rank(grid, dataset, model, seed)
        evaluate_run(grid, dataset, model, seed)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from .helpers import tiny_backbone

    root = tmp_path_factory.mktemp("rerun")
    write_dataset(root)
    model, tokenizer = tiny_backbone(WORDS, seed=0, hidden=64, layers=2, init_std=0.1)
    model.save_pretrained(root / "tiny-llama")
    tokenizer.save_pretrained(root / "tiny-llama")
    procs = []
    for name, hash_seed in (("a", "1"), ("b", "2")):
        workdir = root / name  # results/ and the item-embedding cache are each replica's own
        workdir.mkdir()
        (workdir / "grid.yaml").write_text(yaml.safe_dump(grid(root, root / "tiny-llama")))
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
            "PYTHONHASHSEED": hash_seed,
            "PYTHONPATH": str(REPO),
            "TQDM_DISABLE": "1",
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "import sys; from tests.test_rerun import replica; replica(sys.argv[1])",
                    "grid.yaml",
                ],
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for proc in procs:
        output = proc.communicate(timeout=1500)[0]
        assert proc.returncode == 0, output[-5000:]
    return [root / name / "results" / "rerun" for name in ("a", "b")]


def test_the_grid_covers_every_registered_model():
    assert {m["name"] for m in grid(Path("."), Path("."))["models"]} == set(MODELS)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_two_processes_give_bit_identical_rankings_metrics_and_weights(two_runs, model):
    a, b = (results / "runs" / "toy" / model / "seed0" for results in two_runs)
    names = ["rankings_valid", "rankings_test", "per_user_valid", "per_user_test"]
    if (a / "rankings_test_counterfactual.parquet").is_file():  # a model that reads requests
        names.append("rankings_test_counterfactual")
    assert (a / "rankings_test_counterfactual.parquet").is_file() == MODELS[model].reads_requests
    for name in names:
        pd.testing.assert_frame_equal(
            pd.read_parquet(a / f"{name}.parquet"),
            pd.read_parquet(b / f"{name}.parquet"),
            check_exact=True,
            obj=f"{model} {name}",
        )
    run_a, run_b = read_json(a / "run.json"), read_json(b / "run.json")
    assert run_a["weights_sha256"] == run_b["weights_sha256"]
    # every model with torch weights has a digest
    assert (run_a["weights_sha256"] is None) == (model == "emb_knn")
    assert read_json(a / "metrics.json")["test"] == read_json(b / "metrics.json")["test"]
    hash_seeds = [run["determinism"]["python_hash_seed"] for run in (run_a, run_b)]
    assert hash_seeds == ["1", "2"] and run_a["determinism"]["deterministic_algorithms"]
    assert run_a["determinism"]["torch_threads"] == 2


def test_the_semantic_id_code_tables_are_bit_identical(two_runs):
    tables = [
        sorted((results / "artifacts" / "toy" / "semantic_ids").glob("*/codes.npy"))
        for results in two_runs
    ]
    assert len(tables[0]) == 2  # RQ-VAE codes and random codes
    for left, right in zip(*tables, strict=True):
        assert left.relative_to(two_runs[0]) == right.relative_to(two_runs[1])
        assert (
            hashlib.sha256(left.read_bytes()).digest()
            == hashlib.sha256(right.read_bytes()).digest()
        )
