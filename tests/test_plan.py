"""`llm4rec plan`: its parameter counts against the models themselves, its token counts by hand, and
its CPU profile against the default grid's measured runs (within 2x per run)."""

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from llm4rec.config import load_grid
from llm4rec.estimates import KNOWN_BACKBONES, Shape, grpo_pass_bytes, lora_params
from llm4rec.llm.backbone import LoraSettings
from llm4rec.models import MODELS
from llm4rec.plan import PROFILES, cell_cost, dataset_stats, plan, render_plan

REPO = Path(__file__).resolve().parents[1]
MEASURED = REPO / "docs" / "results" / "default-cpu-costs.csv"


def test_backbone_and_lora_parameter_counts_equal_the_models_own():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = Shape(hidden=64, layers=3, intermediate=160, vocab=500, heads=8, kv_heads=2)
    config = LlamaConfig(
        vocab_size=500,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    norms = 3 * 2 * 64 + 64  # two RMSNorms a block and the final one: not in the plan's count
    assert sum(p.numel() for p in model.parameters()) == shape.params + norms
    lora = LoraSettings(
        rank=4,
        target_modules=[
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
    )
    wrapped = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=lora.target_modules)
    )
    assert sum(p.numel() for p in wrapped.parameters() if p.requires_grad) == lora_params(
        shape, lora
    )


@pytest.fixture(scope="module")
def default_grid(tmp_path_factory):
    """The default grid with its results (the prepared split) in a scratch folder."""
    raw = yaml.safe_load((REPO / "benchmarks" / "default.yaml").read_text())
    tmp = tmp_path_factory.mktemp("plan")
    raw = copy.deepcopy(raw) | {"results_dir": str(tmp / "results")}
    (tmp / "grid.yaml").write_text(yaml.safe_dump(raw))
    grid = load_grid(tmp / "grid.yaml")
    return grid, dataset_stats(grid, "ml-100k")


def test_training_tokens_are_steps_times_windows_times_their_length(default_grid):
    """cf_e4srec: 60 steps of 32 windows, each an 8-token frame around 10 history soft tokens."""
    grid, stats = default_grid
    params = grid.model_params("cf_e4srec", "ml-100k")
    assert (params["sft"]["steps"], params["sft"]["batch_size"], params["max_history"]) == (
        60,
        32,
        10,
    )
    cost = cell_cost(grid, "ml-100k", "cf_e4srec", stats)
    assert cost.train_tokens == 60 * 32 * (8 + 10)
    assert stats["users"] == 943 and stats["items"] == 1349


def test_the_cpu_profile_is_within_2x_of_every_measured_llm_run_of_the_default_grid(default_grid):
    """The reference: docs/results/default-cpu-costs.csv, written by benchmarks/measured_costs.py
    from a fresh-clone `make bench` (train + validation + test ranking seconds per run). Baselines
    with early stopping are left out: the plan budgets their epoch ceiling, not the epoch they stop
    at."""
    grid, stats = default_grid
    measured = pd.read_csv(MEASURED, comment="#").groupby("model")["run_seconds"].mean()
    checked = [
        m
        for m in measured.index
        if m in grid.models and MODELS[m].paradigm != "baseline"  # early-stopped baselines: out
    ]
    assert len(checked) == 12  # the 12 LLM rows of the default grid
    ratios = {
        m: cell_cost(grid, "ml-100k", m, stats).run_seconds(PROFILES["cpu2"]) / measured[m]
        for m in checked
    }
    assert all(0.5 <= r <= 2.0 for r in ratios.values()), {
        m: round(r, 2) for m, r in ratios.items()
    }


def test_the_plan_table_names_every_cell_and_totals_device_hours(default_grid):
    grid, _ = default_grid
    frame = plan(grid, "cpu2")
    # every model on ml-100k, and on the ml-1m slice (role: source) only the transferred run; each
    # artifact a row of its own, with the resources its job asks for
    artifacts = frame[frame["paradigm"] == "artifact"]
    assert len(artifacts) == len(grid.artifacts()) > 0
    assert (artifacts["gpu"] == 0).all() and (artifacts["runtime_min"] == 60).all()
    assert len(frame) == len(grid.models) + 1 + len(artifacts)
    assert (frame["minutes_per_run"] > 0).all()
    source = frame[(frame["dataset"] == "ml-1m-slice") & (frame["paradigm"] != "artifact")]
    assert source[["model", "runs"]].values.tolist() == [["alpharec", 1]]
    assert frame["device_hours"].sum() == pytest.approx(
        (frame["runs"] * frame["minutes_per_run"]).sum() / 60
    )
    text = render_plan(frame, "cpu2")
    assert (
        all(f"| ml-100k | {m} |" in text for m in grid.models)
        and "Total:" in text
        and "device-hours" in text
    )


@pytest.mark.slow
def test_the_paper_grid_requests_at_least_the_runtime_its_plan_suggests(tmp_path):
    raw = yaml.safe_load((REPO / "benchmarks" / "paper.yaml").read_text()) | {
        "results_dir": str(tmp_path / "results")
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(raw))
    grid = load_grid(tmp_path / "grid.yaml")
    frame = plan(grid, "h100")
    # the artifacts that run an LLM ask for a GPU (RTA's states, the Qwen item-text encoder)
    gpu = frame.set_index("model")["gpu"]
    llm = [
        f"artifact {name} ({key[:8]})"
        for (_, name, key), source in grid.artifacts().items()
        if name == "llm_states" or source.params.get("kind") == "backbone"
    ]
    assert len(llm) >= 2 and (gpu[llm] == 1).all(), gpu[llm]  # one of each per dataset
    short = frame[frame["runtime_min"] < frame["runtime_suggested_min"]]
    assert short.empty, short[
        ["dataset", "model", "minutes_per_run", "runtime_min", "runtime_suggested_min"]
    ]
    # every SFT row trains about the same epochs on each dataset (ml-1m has ~10x the windows)
    epochs = frame[frame["epochs"] > 0].pivot(index="model", columns="dataset", values="epochs")
    ratio = epochs["ml-1m"] / epochs["ml-100k"]
    assert len(ratio) >= 14 and ratio.between(0.8, 1.25).all(), ratio
    trained = ~frame["paradigm"].isin(["baseline", "artifact"])
    assert (frame.loc[trained, "gpu"] == 1).all()
    # GRPO in chunks: sid_llm_grpo's step in one pass (64 prompts x 16 rows of about 116 tokens on
    # Qwen2.5-0.5B) would need well over 80 GB; the grid's micro_prompts bring every GRPO pass
    # under an H100's memory, with room
    qwen = KNOWN_BACKBONES["Qwen/Qwen2.5-0.5B-Instruct"]
    assert grpo_pass_bytes(64 * 16, 116, 5, qwen.hidden, qwen.layers, qwen.vocab) > 80e9
    grpo = frame[frame["model"].str.endswith("_grpo")]
    assert len(grpo) >= 3 and (grpo["peak_GiB"] < 40).all(), grpo[["model", "peak_GiB"]]


def test_the_new_item_grid_plans_and_its_cold_start_row_trains_nothing(default_grid, tmp_path):
    """benchmarks/new_items.yaml plans (every row named); TIGER's cold-start retrieval, a row on
    sid_tiger's weights, costs the parent's ranking of its users and no training."""
    _, stats = default_grid
    raw = yaml.safe_load((REPO / "benchmarks" / "new_items.yaml").read_text())
    (tmp_path / "grid.yaml").write_text(
        yaml.safe_dump(raw | {"results_dir": str(tmp_path / "results")})
    )
    grid = load_grid(tmp_path / "grid.yaml")
    row = cell_cost(grid, "ml-100k-new", "sid_tiger_coldstart", stats)
    parent = cell_cost(grid, "ml-100k-new", "sid_tiger", stats)
    assert row.train_tokens == row.train_flops == row.trainable == 0
    assert 0 < row.forward_flops < parent.forward_flops and parent.train_tokens > 0
    frame = plan(grid, "cpu2")
    models = frame.loc[frame["paradigm"] != "artifact", "model"]
    assert set(models) == set(grid.models) and (frame["minutes_per_run"] > 0).all()


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_grpo_pass_s_counted_bytes_against_torch_s_saved_tensors(checkpointing):
    """The plan's bytes for one GRPO pass (`grpo_pass_bytes`) against what autograd keeps for
    backward in the real pass (`continuation_log_probs` of a tiny fp32 Llama: twice bf16's bytes):
    within 15% without checkpointing, linear in the rows, and with checkpointing an upper bound
    (it adds one layer's recomputed activations, which autograd never holds at once)."""
    import torch

    from llm4rec.llm.rl import _enable_checkpointing, continuation_log_probs

    from .helpers import tiny_backbone

    def saved_bytes(rows: int) -> int:
        model, _ = tiny_backbone([f"w{i}" for i in range(400)], hidden=64, layers=4)
        for layer in _enable_checkpointing(model) if checkpointing else []:
            layer.training = True
        saved = {}

        def pack(tensor):
            saved[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
            return tensor

        prompts, continuations = [[5 + i % 50] * 40 for i in range(rows)], [[7, 8, 9]] * rows
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            continuation_log_probs(model, prompts, continuations, 0)
        return sum(saved.values())

    vocab = 404  # the words and the 4 specials
    for rows in (8, 16):
        counted = 2 * grpo_pass_bytes(rows, 43, 4, 64, 4, vocab, checkpointing)
        measured = saved_bytes(rows)
        if checkpointing:
            assert measured < counted
        else:
            assert measured == pytest.approx(counted, rel=0.15)
    assert grpo_pass_bytes(16, 43, 4, 64, 4, vocab) == 2 * grpo_pass_bytes(8, 43, 4, 64, 4, vocab)


def test_an_epoch_is_the_training_windows_each_paradigm_builds(default_grid):
    """`sft_epochs` counts the windows a paradigm trains on: every training target (the sliding
    windows `training_windows` builds, exactly) or, strided, one window per max_history targets
    of each user (IDIOMoE's windows, counted here user by user: within 5%)."""
    import numpy as np

    from llm4rec.estimates import sft_epochs
    from llm4rec.llm.training import training_windows
    from llm4rec.runner import prepare_dataset

    grid, stats = default_grid
    split = prepare_dataset(grid, "ml-100k")
    sliding = len(training_windows(split, 20, None, np.random.default_rng(0)))
    assert sft_epochs(sliding, stats) == pytest.approx(1.0)
    lengths = split.phase("train").groupby("user_id").size()
    strided = sum(len(range(n, 1, -50)) for n in lengths)  # IDIOMoE's windows of 50 + 1 items
    assert sft_epochs(strided, stats, stride=50) == pytest.approx(1.0, rel=0.05)
    assert sft_epochs(sliding, stats, cap=1000) == pytest.approx(sliding / 1000)
