"""`llm4rec smoke`: the toy-cost run of a whole grid. Its parts (offline architecture, tiny
backbones of the real model types, the per-cell checks) on their own, then the default and the paper
grid end to end."""

import math
import subprocess
import sys
from pathlib import Path

import pytest

from llm4rec.io import write_json
from llm4rec.smoke import SmokeError, architecture, check_cell, tiny_backbone_folder

REPO = Path(__file__).resolve().parents[1]


def test_architecture_is_read_from_a_folder_or_known_by_name_and_never_downloaded(tmp_path):
    write_json(tmp_path / "config.json", {"model_type": "mistral"})
    assert architecture(str(tmp_path)) == "mistral"
    assert architecture("Qwen/Qwen2.5-0.5B-Instruct") == "qwen2"
    assert architecture("smollm2-135m-instruct") == "llama"
    with pytest.raises(
        SmokeError, match="backbone 'acme/unknown-7b': cannot tell its architecture offline"
    ):
        architecture("acme/unknown-7b")


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_tiny_backbones_load_as_their_architecture_and_encode_any_text(tmp_path, model_type):
    from llm4rec.llm.backbone import BackboneConfig, load_backbone

    corpus = [
        "Toy Story (1995)",
        "GoldenEye (1995) [2]",
        "A user watched these movies, oldest first:",
    ]
    folder = tiny_backbone_folder(model_type, corpus, tmp_path / model_type)
    model, tokenizer = load_backbone(BackboneConfig(name_or_path=str(folder), dtype="bf16"))
    assert (
        model.config.model_type == model_type and next(model.parameters()).dtype.is_floating_point
    )
    assert (
        str(next(model.parameters()).dtype) == "torch.bfloat16" and model.config.tie_word_embeddings
    )
    for text in ("Toy Story (1995)", "Zz unseen words, é too"):
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids) == text
    assert "<|assistant|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


class FakeGrid:
    def __init__(self, root):
        self.root = root
        self.grid_dir = root

    def run_dir(self, dataset, model, seed):
        return self.root / dataset / model / f"seed{seed}"


def fake_run(grid, model, fit):
    folder = grid.run_dir("d", model, 0)
    write_json(folder / "run.json", {"fit": fit})
    write_json(folder / "metrics.json", {"cost": {"train_time_s": 1.0}})


def test_a_cell_fails_on_each_fault_and_the_table_names_it(tmp_path):
    grid = FakeGrid(tmp_path)
    good = {
        "first_loss": 7.0,
        "final_loss": 6.5,
        "trainable_unmoved": [],
        "precision": {
            "backbone_dtype": "bfloat16",
            "trainable_dtype": "float32",
            "autocast": "bfloat16",
            "devices": "cpu",
        },
    }
    faults = {
        "idiomoe": good | {"final_loss": math.nan},
        "cf_e4srec": good | {"trainable_unmoved": ["base_model.model.cf_head.bias"]},
        "cf_llara": good
        | {"precision": good["precision"] | {"trainable_dtype": "bfloat16,float32"}},
        "sid_llm": good | {"precision": good["precision"] | {"backbone_dtype": "float32"}},
        "text_prompted": good | {"precision": good["precision"] | {"devices": "cpu,cuda:0"}},
    }
    fake_run(grid, "idiomoe_popprior", good)
    assert check_cell(grid, "d", "idiomoe_popprior", 0, "bf16").ok
    expected = {
        "idiomoe": "non-finite loss",
        "cf_e4srec": "did not move: base_model.model.cf_head.bias",
        "cf_llara": "trainable tensors in bfloat16,float32",
        "sid_llm": "backbone in float32, not bfloat16",
        "text_prompted": "tensors on several devices",
    }
    for model, fit in faults.items():
        fake_run(grid, model, fit)
        cell = check_cell(grid, "d", model, 0, "bf16")
        assert not cell.ok and expected[model] in "; ".join(cell.problems), (model, cell.problems)
    missing = check_cell(grid, "d", "sid_tiger", 0, "bf16")
    assert not missing.ok and "no metrics.json" in missing.problems[0]


def test_a_smoke_of_some_models_runs_what_they_consume_too():
    from llm4rec.config import load_grid
    from llm4rec.smoke import consumed_closure

    grid = load_grid(REPO / "benchmarks" / "paper.yaml")
    # a variant brings its parent; a CF row the SASRec run it reads; GRPO its policy's run
    assert consumed_closure(grid, ["cf_e4srec_permuted"]) == {
        "cf_e4srec_permuted",
        "cf_e4srec",
        "sasrec",
    }
    assert consumed_closure(grid, ["emb_knn", "sid_tiger_grpo"]) == {
        "emb_knn",
        "bpr",
        "sid_tiger_grpo",
        "sid_tiger",
    }
    with pytest.raises(SmokeError, match="'sasrek' is not a model of this grid"):
        consumed_closure(grid, ["sasrek"])


def test_a_smoke_entry_keeps_the_grids_settings_beside_a_variants_overrides():
    """cf_e4srec_allpos overrides `prompt: {answer_prefix: ""}`; the grid words `prompt.user`: the
    smoke entry keeps the grid's wording (a nested key no override contradicts) and drops only
    what an override contradicts."""
    from collections import defaultdict

    from llm4rec.config import load_grid
    from llm4rec.models import MODELS, check_params
    from llm4rec.smoke import _consistent, smoke_entry

    grid = load_grid(REPO / "benchmarks" / "default.yaml")
    entry = next(e for e in grid.raw["models"] if e["name"] == "cf_e4srec_allpos")
    out = smoke_entry(entry, grid, defaultdict(lambda: Path("tiny")), {}, "fp32")
    prompt = check_params(MODELS["cf_e4srec_allpos"], out["params"]).prompt
    assert (prompt.user, prompt.answer_prefix) == ("Movies watched:{history}", "")
    overrides = {"loss_positions": "all", "prompt": {"answer_prefix": ""}}
    given = {"loss_positions": "last", "prompt": {"user": "u{history}", "answer_prefix": "x"}}
    assert _consistent(given, overrides) == {"prompt": {"user": "u{history}"}}


@pytest.mark.slow
@pytest.mark.paper
def test_the_whole_paper_grid_runs_end_to_end_at_toy_cost(tmp_path):
    """Every model entry of paper.yaml, variants and RL stages included, through Snakemake, with
    its ml-1m prepared (`make test-paper`; about 6 minutes on 2 cores). `make test` runs every
    registered row at this toy cost with paper.yaml's settings in process (tests/test_rerun.py)."""
    config = "benchmarks/paper.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "llm4rec.cli", "smoke", config, "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    import yaml

    models = [m["name"] for m in yaml.safe_load((REPO / config).read_text())["models"]]
    table = (tmp_path / "smoke.md").read_text()
    assert all(f"| {m}/ml-100k/seed" in table for m in models) and "FAIL" not in table
    assert table.count("/ml-100k/seed") == len(models)  # the target's cells, no more
    assert "| prepare ml-1m | ok" in table


@pytest.mark.slow
def test_the_gpu_measurement_script_runs_its_dry_run_on_cpu(tmp_path):
    """benchmarks/perf/gpu_paradigms.py at a tiny shape: every paradigm trains with finite losses
    and ranks (no timing is asserted; the script exists to be run on a GPU machine)."""
    import json

    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/perf/gpu_paradigms.py",
            "--device",
            "cpu",
            "--shape",
            "tiny",
            "--users",
            "4",
            "--steps",
            "2",
            "--out",
            str(out),
            "--beam-out",
            str(tmp_path / "beam.json"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["paradigm"] for r in rows] == [
        "text_prompted",
        "cf_llara",
        "cf_e4srec",
        "idiomoe",
        "sid_llm",
        "sid_tiger",
    ]
    assert all(
        r["loss_finite"] and r["train_tokens_per_s"] > 0 and 0 <= r["top10_overlap_bf16_fp32"] <= 1
        for r in rows
    )
    # a GRPO step on the two GRPO parents, and the beam step's host side with the same top-K
    assert {r["paradigm"] for r in rows if r.get("grpo_s_per_step", 0) > 0} == {
        "text_prompted",
        "sid_llm",
    }
    beam = json.loads((tmp_path / "beam.json").read_text())
    assert beam["beam_same_top_k"] and beam["beam_kib_to_host_per_step"] > 0
