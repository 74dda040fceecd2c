"""A fine-tuned generative recommender as a policy another run starts from (issue 27's RL stage).

The parent run exports its selected weights (`policy.pt`: the trainable tensors after checkpoint
selection: LoRA adapters and trained rows, or every weight of a model trained from scratch) and
`policy.json`, which says how to rebuild the model those tensors belong to (the recommender and
config classes and the resolved config), the sha256 of `policy.pt` and of every file the parent
consumed, and the step and validation score it was selected at. The consumer rebuilds the parent's
recommender from that record, loads the weights, and checks every checksum first: a policy is only
ever continued on the inputs it was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from llm4rec.data.atomic import DataError
from llm4rec.data.split import Split
from llm4rec.io import read_json, sha256_file, write_json, write_with
from llm4rec.llm import precision
from llm4rec.llm.training import trainable_state
from llm4rec.models import POLICY_EXPORTS, BuildSpec, Histories, ResolvedInput, import_object
from llm4rec.params import ParamsError, from_params

POLICY_WEIGHTS, POLICY_RECORD = POLICY_EXPORTS
POLICY_FORMAT = 1


def _qualified(obj: type) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def export_policy(recommender: Any, out_dir: Path) -> dict[str, str]:
    """Write `policy.pt` and `policy.json` for a fitted recommender (its selected weights)."""
    weights = trainable_state(recommender.model)
    write_with(out_dir / POLICY_WEIGHTS, lambda tmp: torch.save({"trainable": weights}, tmp))
    selection = recommender.selection
    record = {
        "format": POLICY_FORMAT,
        "recommender": _qualified(type(recommender)),
        "config_class": _qualified(type(recommender.cfg)),
        "config": dataclasses.asdict(recommender.cfg),
        "seed": recommender.seed,
        "inputs": recommender._input_checksums(),
        "weights_sha256": sha256_file(out_dir / POLICY_WEIGHTS),
        "tensors": len(weights),
        "parameters": int(sum(t.numel() for t in weights.values())),
        "selected_step": selection.step if selection else None,
        "selection_metric": selection.metric if selection else None,
        "valid_score": selection.score if selection else None,
    }
    write_json(out_dir / POLICY_RECORD, record)
    return {
        POLICY_WEIGHTS: "the selected trainable weights (an RL stage's starting policy)",
        POLICY_RECORD: "how to rebuild the model they belong to, with checksums",
    }


def read_policy_record(policy: ResolvedInput) -> dict[str, Any]:
    """The consumed policy's record, its weights' checksum verified."""
    record_path, weights = policy.paths[POLICY_RECORD], policy.paths[POLICY_WEIGHTS]
    record = read_json(record_path)
    if record.get("format") != POLICY_FORMAT:
        raise DataError(
            f"{record_path}: format {record.get('format')!r}, expected {POLICY_FORMAT}; "
            "rerun the parent"
        )
    if sha256_file(weights) != record["weights_sha256"]:
        raise DataError(
            f"{weights}: sha256 differs from the one {record_path} records; the weights were "
            "changed after the parent exported them: rerun the parent"
        )
    return record


def rebuild_parent(
    record: Mapping[str, Any],
    seed: int,
    device: str,
    selection: str,
    inputs: Mapping[str, ResolvedInput],
    where: str,
) -> Any:
    """The parent's recommender, unfitted, from its record: the same class and config, on the
    consumer's seed and device, with the consumer's inputs (checked to be the parent's, file by
    file)."""
    for slot, files in record["inputs"].items():
        if slot not in inputs:
            raise DataError(
                f"{where}: the policy's parent consumed input '{slot}', which this run is not "
                f"given (it is given: {', '.join(sorted(inputs)) or 'nothing'}); give it the "
                "parent's"
            )
        for name, digest in files.items():
            path = inputs[slot].paths.get(name)
            if path is None or sha256_file(path) != digest:
                raise DataError(
                    f"{where}: input '{slot}' ({inputs[slot].source}) file {name} differs from "
                    "the one the policy's parent was trained on; give this run the parent's "
                    f"'{slot}'"
                )
    if record["seed"] != seed:
        raise DataError(
            f"{where}: the policy was trained with seed {record['seed']}, this run has seed {seed}"
        )
    try:
        config = from_params(import_object(record["config_class"]), record["config"], where)
    except ParamsError as err:
        raise DataError(
            f"{where}: the policy's config no longer parses ({err}); rerun the parent"
        ) from err
    return import_object(record["recommender"])(
        config, seed, device, selection, {slot: inputs[slot] for slot in record["inputs"]}
    )


def load_policy_weights(model: torch.nn.Module, policy: ResolvedInput) -> int:
    """Copy the exported tensors into the rebuilt model's trainable parameters (names and shapes
    must match exactly); returns the number of tensors."""
    path = policy.paths[POLICY_WEIGHTS]
    saved = torch.load(path, map_location="cpu", weights_only=True)["trainable"]
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        extra, missing = sorted(set(saved) - set(params)), sorted(set(params) - set(saved))
        raise DataError(
            f"{path}: holds {len(saved)} tensors, the rebuilt model trains {len(params)} "
            f"(only in the file: {extra[:3]}; only in the model: {missing[:3]})"
        )
    with torch.no_grad():
        for name, value in saved.items():
            if params[name].shape != value.shape:
                raise DataError(
                    f"{path}: tensor {name} has shape {tuple(value.shape)}, the rebuilt model's "
                    f"{tuple(params[name].shape)}"
                )
            params[name].copy_(value.to(params[name].device, params[name].dtype))
    return len(saved)


def restore_policy(parent: Any, split: Any, policy: ResolvedInput) -> tuple[dict[str, Any], int]:
    """The rebuilt parent (`rebuild_parent`) as it was selected: its backbone loaded and prepared
    (items written in), made trainable as it was trained (frozen when it trained nothing), the
    exported tensors copied in;
    returns (prepare's facts, tensors loaded)."""
    parent.model, parent.tokenizer = parent.load()
    info = parent.prepare(split)
    if parent.trains:
        parent.make_trainable()
    else:  # a zero-shot parent trained nothing: frozen, and its policy holds no tensor
        parent.inference_setup()
    return info, load_policy_weights(parent.model, policy)


def policy_parent(
    name: str, seed: int, device: str, selection: str, inputs: Mapping[str, ResolvedInput]
) -> tuple[ResolvedInput, dict[str, Any], Any]:
    """A consumer's `policy` input, its checked record and the parent rebuilt from it (on the
    consumer's other inputs): what every row built on a parent's policy starts from."""
    policy = inputs["policy"]
    record = read_policy_record(policy)
    parent_inputs = {slot: source for slot, source in inputs.items() if slot != "policy"}
    return policy, record, rebuild_parent(record, seed, device, selection, parent_inputs, name)


class PolicyStage:
    """A row over another run's exported policy (a steered, exact-ranking, cold-start or RL row):
    its name and config, and the parent rebuilt from the policy (`policy_parent`), whose model it
    ranks with. Subclasses check what they need of the parent through its declared attributes
    (`reads_requests`, `one_forward`), never by probing its config."""

    def __init__(self, spec: BuildSpec):
        self.name, self.cfg, self.seed = spec.name, spec.config, spec.seed
        self.selection_metric = spec.selection
        self.policy, self.record, self.parent = policy_parent(
            spec.name, spec.seed, spec.device, spec.selection, spec.inputs
        )

    @property
    def model(self):
        return self.parent.model

    def rank(self, histories: Histories, k: int) -> pd.DataFrame:
        return self.parent.rank(histories, k)

    def export(self, out_dir: Path, split: Split) -> dict[str, str]:
        """Nothing: the row's weights are its parent's policy (or, trained, its own checkpoint)."""
        return {}

    def inference_cost(self) -> dict[str, float]:
        return self.parent.inference_cost()


def frozen_policy_facts(
    parent: Any, policy: ResolvedInput, record: dict[str, Any], tensors: int
) -> dict[str, Any]:
    """What run.json records of a row that ranks with a parent's restored weights and trains none
    (a steered, exact-ranking or cold-start row): the policy it read, the frozen model's facts."""
    return {
        "policy": {
            "source": policy.source,
            "tensors": tensors,
            "parent_selected_step": record["selected_step"],
            "parent_valid_score": record["valid_score"],
        },
        "train_tokens": 0,
        "precision": precision.record(parent.model, parent.compute_dtype),
        "backbone": parent.loaded_backbone,
        "parameters_total": sum(p.numel() for p in parent.model.parameters()),
        "parameters_trainable": 0,
    }
