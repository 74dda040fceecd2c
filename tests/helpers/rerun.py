"""The rerun test's 40-item toy dataset (rerun and multi-process tests), and its grid: every
registered row on it, generated from the registry."""

from pathlib import Path

import yaml

from llm4rec.models import MODELS

REPO = Path(__file__).resolve().parents[2]
CUTOFFS = [5, 10]
PAPER = "benchmarks/paper.yaml"


COLOURS = ["red", "blue", "green", "old", "dark", "happy", "cold", "small"]


NOUNS = ["car", "sky", "house", "train", "river"]


TITLES = [f"{c} {n}" for c in COLOURS for n in NOUNS]  # 40 items


WORDS = sorted(
    set(COLOURS)
    | set(NOUNS)
    | {"items", ":", ";", "next", "(", ")", "1990", "1991", "1992", "Comedy", "Drama"}
)


def write_dataset(folder: Path) -> None:
    """48 users, each walking the catalogue from its own start with its own stride (18-30 items)."""
    inter = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u in range(48):
        for t in range(18 + u % 13):
            inter.append(f"u{u}\ti{(u + t * (1 + u % 4)) % len(TITLES)}\t{t}")
    item = ["item_id:token\ttitle:token_seq\tyear:token\tgenres:token_seq\tdescription:token_seq"]
    item += [
        f"i{i}\t{title}\t{1990 + i % 3}\t{'Comedy' if i % 2 else 'Drama'}\t{title}"
        for i, title in enumerate(TITLES)
    ]
    (folder / "toy.inter").write_text("\n".join(inter) + "\n")
    (folder / "toy.item").write_text("\n".join(item) + "\n")


def registry_grid(data: Path) -> dict:
    """Every registered row on the toy dataset: paper.yaml's entry where it has one (the settings
    the paper grid runs: Qwen2.5 rows, curricula, prompts), else the row's name alone; with the
    inputs a 40-item catalogue needs (semantic IDs of 2 levels of 4 codes, so that items share
    prefixes) or another dataset (a transfer row's: the source slice)."""
    paper = {e["name"]: e for e in yaml.safe_load((REPO / PAPER).read_text())["models"]}
    toy = {
        "source": "atomic",
        "path": str(data),
        "atomic_name": "toy",
        "k_core": {"user": 3, "item": 1},
        "new_items": 0.1,  # items never in training: what the cold-start row retrieves
        "text_fields": {f: f for f in ("title", "year", "genres", "description")},
    }
    models = []
    for name, spec in MODELS.items():
        entry = {
            k: v
            for k, v in paper.get(name, {"name": name}).items()
            if k not in ("resources", "dataset_params")
        }
        inputs = {}
        for slot, declared in spec.inputs.items():
            source = dict((entry.get("inputs") or {}).get(slot) or declared.default)
            if source.get("artifact") == "semantic_ids":
                source["params"] = source.get("params", {}) | {"levels": 2, "codebook_size": 4}
            if declared.across_datasets == "required":  # a transfer row: from the source slice
                source["dataset"] = "toy-source"
            if source != declared.default:
                inputs[slot] = source
        models.append(entry | ({"inputs": inputs} if inputs else {}))
    return {
        "name": "rerun",
        "seeds": [0],
        # steerability on: the rows that read requests also rank with counterfactual ones
        "evaluation": {
            "cutoffs": CUTOFFS,
            "steer": {"templates": {"both": "something from the {decade}: {genres}"}},
        },
        "datasets": {
            "toy": toy,
            # what the zero-shot row transfers from: a 30-user slice of the same files
            "toy-source": toy | {"role": "source", "sample_users": 30},
        },
        "models": models,
    }


def toy_grid(root: Path) -> dict:
    """The registry grid at smoke cost, with results relative to the replica's folder."""
    from llm4rec.config import load_grid
    from llm4rec.smoke import smoke_config

    base = root / "registry.yaml"
    base.write_text(yaml.safe_dump(registry_grid(root) | {"results_dir": str(root / "prepared")}))
    raw = smoke_config(load_grid(base), root / "smoke", "cpu", "fp32")
    return raw | {"results_dir": "results", "reports_dir": "reports", "threads": 2}
