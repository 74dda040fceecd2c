"""The registry: every model is built behind the full Recommender protocol, its config class and
paradigm resolve, and its declared inputs can be satisfied by some model's exports or artifact."""

from pathlib import Path

import pytest

from llm4rec.models import (
    ARTIFACTS,
    MODELS,
    PARADIGMS,
    Recommender,
    ResolvedInput,
    build_model,
    check_params,
    import_object,
)
from llm4rec.params import ParamsError


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_implements_the_whole_protocol(name):
    spec = MODELS[name]
    assert spec.paradigm in PARADIGMS and spec.title
    inputs = {slot: ResolvedInput({f: Path(f) for f in s.files}, "test") for slot, s in spec.inputs.items()}
    model = build_model(name, {}, seed=0, device="cpu", inputs=inputs)
    assert isinstance(model, Recommender)  # fit, rank, export, inference_cost
    assert check_params(spec, {}) is not None or spec.config is None
    for slot, declared in spec.inputs.items():
        providers = [m for m in MODELS.values() if set(declared.files) <= set(m.exports)]
        providers += [a for a in ARTIFACTS.values() if set(declared.files) <= set(a.files)]
        assert providers, f"{name}.{slot}: no model or artifact provides {declared.files}"
        default = MODELS[declared.default["run"]].exports if "run" in declared.default else ARTIFACTS[declared.default["artifact"]].files
        assert set(declared.files) <= set(default)


def test_a_model_whose_inputs_were_not_resolved_is_refused():
    with pytest.raises(ValueError, match=r"emb_knn: input 'embeddings' was not resolved \(it consumes: embeddings\)"):
        build_model("emb_knn", {}, seed=0, device="cpu")


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_every_artifact_builder_and_config_resolve(name):
    spec = ARTIFACTS[name]
    assert callable(import_object(spec.builder)) and spec.files
    with pytest.raises(ParamsError, match=rf"{name}: unknown parameter 'nope'"):
        check_params(spec, {"nope": 1})
