"""`llm4rec smoke GRID`: every cell of a grid through Snakemake, the same code paths, at toy cost.

Before anyone spends GPU-hours on a grid, this runs it end to end on this machine:
- each backbone is replaced by a tiny random model of the same architecture (`model_type`: Llama for
  SmolLM2, Qwen2 for Qwen2.5, ...; TIGER's T5 shrunk), with a byte-level BPE tokenizer trained on
  the dataset's item texts and the grid's prompts, and a chat template as instruct models have;
- in the dtype the grid would run in on a GPU (bf16 by default), on the device given (CPU by
  default);
- 4 optimiser steps, a 16-user test sample and 8 validation users per LLM model, one epoch per
  baseline, a small RQ-VAE, one seed, every model entry once on the first evaluated dataset (and the
  source datasets a zero-shot row transfers from; every other dataset is still prepared: its loader
  and split run too);
- text retention on a small sample written next to the grid.

A cell fails on a crash, a non-finite loss, a trainable tensor that did not move in its steps, a
trainable tensor not in fp32, a frozen backbone not in the requested dtype, or tensors on more than
one device; the table names it. Everything goes to its own folder (default `results/smoke/<grid>`),
its own MLflow store included.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from llm4rec import layout
from llm4rec.config import Grid, load_grid
from llm4rec.io import read_json, write_text
from llm4rec.models import MODELS, import_object, row_function

REPO = Path(__file__).resolve().parents[1]
STEPS = 4  # a zero-initialised head passes gradient back from step 2, LoRA's A from step 3
TEST_USERS, VALID_USERS = 16, 8
LAYERS, HIDDEN, VOCAB = 4, 32, 2000
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
# backbones known by name (the offline machine cannot read a hub id's config); a local folder or a
# model in the Hugging Face cache is read instead
ARCHITECTURES = {
    "smollm2": "llama",
    "smollm": "llama",
    "llama": "llama",
    "qwen2": "qwen2",
    "mistral": "mistral",
}


class SmokeError(ValueError):
    """A grid the smoke cannot build (an architecture it cannot tell offline)."""


def architecture(name_or_path: str) -> str:
    """The `model_type` of a backbone, without downloading it."""
    folder = Path(name_or_path).expanduser()
    if (folder / "config.json").is_file():
        return read_json(folder / "config.json")["model_type"]
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(name_or_path, local_files_only=True).model_type
    except (OSError, ValueError):
        pass
    lowered = name_or_path.lower().replace(".", "")
    for key in sorted(ARCHITECTURES, key=len, reverse=True):
        if key in lowered:
            return ARCHITECTURES[key]
    raise SmokeError(
        f"backbone '{name_or_path}': cannot tell its architecture offline (not a local folder, "
        "not in the Hugging Face cache, and its name holds none of "
        f"{', '.join(sorted(ARCHITECTURES))})"
    )


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def bpe_tokenizer(corpus: list[str], vocab: int):
    """A byte-level BPE tokenizer trained on `corpus` (any text encodes); ids 0-3 are <pad>,
    <unk>, <bos> and <eos>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=SPECIALS,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
    )


def tiny_backbone_folder(model_type: str, corpus: list[str], folder: Path) -> Path:
    """A random model of `model_type` (4 layers of 32, tied embeddings, as SmolLM2 and Qwen2.5 tie
    theirs) and a byte-level BPE tokenizer trained on `corpus` (any text encodes; each
    architecture's own tokenizer class loads it), with a chat template, saved where `load_backbone`
    reads a local folder."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = bpe_tokenizer(corpus, VOCAB)
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        model_type,
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=True,
        initializer_range=0.1,
    )
    tmp = folder.with_name(folder.name + ".tmp")
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def retention_sample(corpus: list[str], path: Path) -> dict[str, Any]:
    """A small text-retention sample of the corpus's words (so the tiny tokenizer knows them)."""
    text = "SMOKE " + " ".join(corpus)[:4000] + "\n"
    write_text(path, text)
    sample = "\n".join(line.strip() for line in text.splitlines())[:2000]
    return {
        "enabled": True,
        "path": str(path),
        "start": "SMOKE",
        "chars": 2000,
        "window": 64,
        "sha256": hashlib.sha256(sample.encode("utf-8")).hexdigest(),
    }


def _fields(spec_config: str | None) -> set[str]:
    if spec_config is None:
        return set()
    config = import_object(spec_config)
    return (
        {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()
    )


def _consistent(params: dict, overrides: dict) -> dict:
    """`params` without the values a variant's overrides contradict (at every depth: a grid's
    `prompt: {user: ...}` stays beside an override's `prompt: {answer_prefix: ""}`)."""
    kept = {}
    for key, value in params.items():
        fixed = overrides.get(key)
        if isinstance(value, dict) and isinstance(fixed, dict):
            kept[key] = _consistent(value, fixed)
        elif key not in overrides or value == fixed:
            kept[key] = value
    return kept


def smoke_entry(
    entry: dict, grid: Grid, backbones: dict[str, Path], retention: dict, dtype: str
) -> dict:
    """A grid's model entry at toy cost: the same model, tiny backbone, few steps and users."""
    spec = MODELS[entry["name"]]
    fields = _fields(spec.config)
    out = {
        k: v
        for k, v in copy.deepcopy(entry).items()
        if k not in ("seeds", "main_seeds", "dataset_params")
    }
    params = grid.model_params(entry["name"], grid.datasets[0])
    overrides = spec.overrides
    if "backbone" in fields:
        name = (params.get("backbone") or {}).get("name_or_path") or _default_backbone(spec)
        params["backbone"] = {"name_or_path": str(backbones[name]), "dtype": dtype}
    if "sft" in fields:
        sft = params.get("sft") or {}
        # a schedule over steps keeps its share of the (shorter) budget
        if params.get("curriculum_steps"):
            budget = sft.get("steps") or import_object(spec.config)().sft.steps
            params["curriculum_steps"] = max(1, round(params["curriculum_steps"] * STEPS / budget))
        params["sft"] = sft | {
            "steps": STEPS,
            "checkpoint_every": STEPS,
            "batch_size": min(sft.get("batch_size", 8), 4),
            "grad_accum": 1,
            "warmup_steps": 0,
        }
    for key, value in (
        ("eval_every", STEPS),
        ("valid_users", VALID_USERS),
        ("batch_users", 8),
        ("max_train_examples", 64),
        ("beam_width", 10),
        ("text_retention", retention),
    ):
        if key in fields and key not in overrides:
            params[key] = value
    toy = row_function(spec, "toy_params")
    if toy is not None:  # the row's own settings at toy cost (its module's `toy_params`)
        params = toy(params, STEPS)
    out["params"] = _consistent(params, overrides)
    if spec.paradigm != "baseline":
        out["evaluation"] = {
            "cutoffs": [5, 10],
            "test_users": TEST_USERS,
            "valid_users": VALID_USERS,
        }
    encoder = text_encoder_backbone(grid, entry["name"])
    if encoder:  # item text embedded by a backbone LLM: the tiny one of its architecture
        text = copy.deepcopy(grid.model_inputs(entry["name"])["text"])
        text["params"] = text.get("params", {}) | {"model": str(backbones[encoder])}
        out["inputs"] = (out.get("inputs") or {}) | {"text": text}
    reader = states_backbone(grid, entry["name"])
    if reader:  # RTA's frozen-LLM queries: the tiny backbone, a short window
        states = copy.deepcopy(grid.model_inputs(entry["name"])["states"])
        states["params"] = (states.get("params") or {}) | {
            "backbone": {"name_or_path": str(backbones[reader]), "dtype": dtype},
            "window": 3,
        }
        out["inputs"] = (out.get("inputs") or {}) | {"states": states}
    for slot in (out.get("inputs") or {}).values():
        if slot.get("artifact") == "semantic_ids":
            slot["params"] = (slot.get("params") or {}) | {
                "rq_vae": {"hidden": [32], "latent_dim": 8, "epochs": 5, "batch_size": 256}
            }
    return out


def text_encoder_backbone(grid: Grid, model: str) -> str | None:
    """The backbone a model's item-text embeddings come from (`item_text_embeddings` with kind
    backbone), or None."""
    source = grid.model_inputs(model).get("text") or {}
    params = source.get("params") or {}
    if source.get("artifact") != "item_text_embeddings" or params.get("kind") != "backbone":
        return None
    return params.get("model")


def states_backbone(grid: Grid, model: str) -> str | None:
    """The backbone whose hidden states a model reads (the `llm_states` artifact), or None."""
    source = grid.model_inputs(model).get("states") or {}
    if source.get("artifact") != "llm_states":
        return None
    backbone = (source.get("params") or {}).get("backbone") or {}
    return backbone.get("name_or_path") or _default_backbone(None)


def _default_backbone(spec) -> str:
    from llm4rec.llm.backbone import BackboneConfig

    return BackboneConfig().name_or_path


def consumed_closure(grid: Grid, models: Sequence[str]) -> set[str]:
    """`models` with every run they consume and every variant's parent, transitively (what the
    smoke of a part of a grid must also run)."""
    unknown = sorted(set(models) - set(grid.models))
    if unknown:
        raise SmokeError(
            f"{grid.path}: '{unknown[0]}' is not a model of this grid (its models: "
            f"{', '.join(grid.models)})"
        )
    kept, pending = set(), list(models)
    while pending:
        name = pending.pop()
        if name in kept:
            continue
        kept.add(name)
        pending += [s["run"] for s in grid.model_inputs(name).values() if "run" in s]
        pending += [MODELS[name].parent] if MODELS[name].parent else []
    return kept


def smoke_config(grid: Grid, out: Path, device: str, dtype: str) -> dict:
    """The smoke grid (out/grid.yaml): first dataset, first seed, toy-cost model entries."""
    from llm4rec.llm.identifiers import item_identifiers
    from llm4rec.runner import prepare_dataset

    first = grid.evaluated_datasets[0]
    items = prepare_dataset(_retarget(grid, out, [first]), first).items
    identifiers, _ = item_identifiers(items)
    corpus = [
        str(v) for column in items.columns if column != "item_id" for v in items[column].tolist()
    ]
    corpus += list(identifiers.values()) + [
        s for e in grid.raw["models"] for s in _strings(e.get("params", {}))
    ]
    corpus += ["<|system|>", "<|user|>", "<|assistant|>", "Next:"]
    retention = retention_sample(corpus, out / "retention.txt")
    backbones: dict[str, Path] = {}
    for entry in grid.raw["models"]:
        spec = MODELS[entry["name"]]
        if "backbone" in _fields(spec.config):
            name = (grid.model_params(entry["name"], first).get("backbone") or {}).get(
                "name_or_path"
            ) or _default_backbone(spec)
        else:
            name = text_encoder_backbone(grid, entry["name"]) or states_backbone(
                grid, entry["name"]
            )
        if name is None:
            continue
        if name not in backbones:
            model_type = architecture(name)
            backbones[name] = tiny_backbone_folder(
                model_type, corpus, out / "backbones" / f"tiny-{model_type}"
            )
    raw = copy.deepcopy(grid.raw)
    raw |= {
        "name": f"{grid.name}-smoke",
        "results_dir": str(out / "results"),
        "reports_dir": str(out / "reports"),
        "device": device,
        "threads": 1,
        "seeds": grid.raw.get("seeds", [0])[:1],
        "datasets": {d: grid.raw["datasets"][d] for d in smoked_datasets(grid)},
        "tracking": {"uri": None, "experiment": f"{grid.name}-smoke"},
        "models": [smoke_entry(e, grid, backbones, retention, dtype) for e in grid.raw["models"]],
    }
    return raw


def smoked_datasets(grid: Grid) -> list[str]:
    """The datasets a smoke runs on: the first evaluated one, and every `role: source` one (what a
    zero-shot row transfers from)."""
    first = grid.evaluated_datasets[0]
    return [d for d in grid.datasets if d == first or d not in grid.evaluated_datasets]


def _retarget(grid: Grid, out: Path, datasets: list[str]) -> Grid:
    """The grid with its results under `out` and only `datasets` (to prepare them there), and
    the source datasets its models transfer from."""
    datasets = [d for d in grid.datasets if d in datasets or d not in grid.evaluated_datasets]
    models = [
        {k: v for k, v in e.items() if k != "dataset_params"}
        | {
            "dataset_params": {
                d: v for d, v in e.get("dataset_params", {}).items() if d in datasets
            }
        }
        for e in grid.raw["models"]
    ]
    raw = copy.deepcopy(grid.raw) | {
        "name": f"{grid.name}-smoke",
        "results_dir": str(out / "results"),
        "datasets": {d: grid.raw["datasets"][d] for d in datasets},
        "models": models,
    }
    path = out / f"prepare-{'-'.join(datasets)}.yaml"
    write_text(path, yaml.safe_dump(raw, sort_keys=False))
    return load_grid(path)


@dataclasses.dataclass
class SmokeCheck:
    label: str
    ok: bool
    problems: list[str]
    first_loss: float | None = None
    final_loss: float | None = None
    precision: str = ""
    seconds: float | None = None


def check_cell(grid: Grid, dataset: str, model: str, seed: int, dtype: str) -> SmokeCheck:
    label = f"{model}/{dataset}/seed{seed}"
    folder = grid.run_dir(dataset, model, seed)
    if not (folder / layout.METRICS).is_file():
        return SmokeCheck(
            label,
            False,
            [f"no metrics.json in {folder} (the job failed: see {grid.grid_dir / layout.LOGS})"],
        )
    fit = read_json(folder / layout.RUN_JSON).get("fit", {})
    problems = []
    losses = [fit.get("first_loss"), fit.get("final_loss")]
    if any(v is not None and not math.isfinite(v) for v in losses):
        problems.append(f"non-finite loss {losses}")
    if fit.get("trainable_unmoved"):
        problems.append(
            f"trainable tensors that did not move: {', '.join(fit['trainable_unmoved'][:3])}"
        )
    record = fit.get("precision")
    text = ""
    if record:
        text = f"{record['backbone_dtype']}/{record['trainable_dtype']} on {record['devices']}"
        if record["trainable_dtype"] not in ("float32", "none"):
            problems.append(f"trainable tensors in {record['trainable_dtype']}, not float32")
        wanted = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)
        if "backbone" in _fields(MODELS[model].config) and record["backbone_dtype"] != wanted:
            problems.append(f"backbone in {record['backbone_dtype']}, not {wanted}")
        if "," in record["devices"]:
            problems.append(f"tensors on several devices: {record['devices']}")
    metrics = read_json(folder / layout.METRICS)
    return SmokeCheck(
        label,
        not problems,
        problems,
        losses[0],
        losses[1],
        text,
        metrics.get("cost", {}).get("train_time_s"),
    )


def render(cells: list[SmokeCheck], prepared: dict[str, str]) -> str:
    lines = [
        "| cell | result | first loss | final loss | backbone / trainable dtype | train s |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        fmt = lambda v: "--" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(
            f"| {c.label} | {'ok' if c.ok else 'FAIL: ' + '; '.join(c.problems)} | "
            f"{fmt(c.first_loss)} | {fmt(c.final_loss)} | {c.precision or '--'} | "
            f"{fmt(c.seconds)} |"
        )
    lines += [f"| prepare {d} | {status} | | | | |" for d, status in prepared.items()]
    return "\n".join(lines) + "\n"


def smoke(
    config: str | Path,
    out: str | Path | None = None,
    device: str = "cpu",
    dtype: str = "bf16",
    cores: int = 2,
    target: str = "both",
    models: Sequence[str] | None = None,
) -> int:
    """Run the smoke grid of `config` (the cells of `target`: both Snakemake targets, or `all`,
    the main job, or `ablations`); print and write its per-cell table; 0 if all cells passed."""
    targets = ["all", "ablations"] if target == "both" else [target]
    kind = {"both": "all", "all": "main", "ablations": "ablations"}[target]
    grid = load_grid(config)
    out = Path(out or Path("results") / "smoke" / grid.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    prepared = {}
    smoked = smoked_datasets(grid)
    # every other dataset's loader and split still run
    for dataset in [d for d in grid.datasets if d not in smoked]:
        try:
            from llm4rec.runner import prepare_dataset

            stats = prepare_dataset(_retarget(grid, out, [dataset]), dataset).meta["stats"]
            prepared[dataset] = f"ok ({stats.get('users')} users, {stats.get('items')} items)"
        except (OSError, ValueError) as err:
            prepared[dataset] = f"FAIL: {err}"
    raw = smoke_config(grid, out, device, dtype)
    if models:
        kept = consumed_closure(grid, models)
        raw["models"] = [e for e in raw["models"] if e["name"] in kept]
    path = out / "grid.yaml"
    write_text(path, yaml.safe_dump(raw, sort_keys=False))
    smoke_grid = load_grid(path)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "TQDM_DISABLE": "1"
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            *targets,  # both: every cell of the grid, variants included
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(out),
            "--config",
            f"grid={path}",
            "--cores",
            str(cores),
            "--resources",
            "mlflow=1",
            "--keep-going",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    (out / "snakemake.log").write_text(proc.stdout + proc.stderr)
    cells = [check_cell(smoke_grid, d, m, s, dtype) for d, m, s in smoke_grid.runs(kind)]
    table = render(cells, prepared)
    failed = [c for c in cells if not c.ok] + [
        d for d, status in prepared.items() if status.startswith("FAIL")
    ]
    summary = (
        f"[llm4rec] smoke of {grid.path}: "
        f"{len(cells) - len([c for c in cells if not c.ok])}/{len(cells)} cells passed, "
        f"{len(prepared)} more datasets prepared, in {time.perf_counter() - start:.0f} s "
        f"({device}, {dtype}); Snakemake log: {out / 'snakemake.log'}"
    )
    write_text(out / "smoke.md", table + "\n" + summary + "\n")
    print(table + "\n" + summary)
    if proc.returncode != 0 and not failed:
        print(f"error: Snakemake failed outside the cells: {proc.stderr[-2000:]}", file=sys.stderr)
        return 1
    return 1 if failed else 0
