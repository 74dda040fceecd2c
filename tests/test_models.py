"""The registry: every model is built behind the full Recommender protocol, its config class and
paradigm resolve, and its declared inputs can be satisfied by some model's exports or artifact."""

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import pytest

from llm4rec.data.split import Split
from llm4rec.llm.recommender import LLMConfig, LLMRecommender
from llm4rec.models import (
    ARTIFACTS,
    MODELS,
    PARADIGMS,
    ModelSpec,
    Recommender,
    ResolvedInput,
    build_model,
    check_params,
    import_object,
)
from llm4rec.params import ParamsError

from .helpers.protocol import protocol_gaps

# every model but the rows built on another run's exported policy (a `policy` input: RL stages,
# steered, exact and cold-start rows): their protocol, rebuild and record are their own tests'
# (tests/test_rl_stage.py, test_steer_rows.py, test_exact_rows.py, test_cold_start.py), their
# end-to-end rerun tests/test_rerun.py's
STANDALONE = sorted(n for n, s in MODELS.items() if "policy" not in s.inputs)


@pytest.mark.parametrize("name", STANDALONE)
def test_every_registered_model_implements_the_whole_protocol(name):
    spec = MODELS[name]
    assert spec.paradigm in PARADIGMS and spec.title
    inputs = {
        slot: ResolvedInput({f: Path(f) for f in s.files}, "test")
        for slot, s in spec.inputs.items()
    }
    model = build_model(name, {}, seed=0, device="cpu", inputs=inputs)
    assert protocol_gaps(type(model)) == []
    assert check_params(spec, {}) is not None or spec.config is None
    for slot, declared in spec.inputs.items():
        providers = [m for m in MODELS.values() if set(declared.files) <= set(m.exports)]
        providers += [a for a in ARTIFACTS.values() if set(declared.files) <= set(a.files)]
        assert providers, f"{name}.{slot}: no model or artifact provides {declared.files}"
        default = (
            MODELS[declared.default["run"]].exports
            if "run" in declared.default
            else ARTIFACTS[declared.default["artifact"]].files
        )
        assert set(declared.files) <= set(default)


class _Complete:
    def fit(self, split: Split, workdir: Path) -> dict:
        return {}

    def rank(self, histories: Mapping[str, Sequence[str]], k: int) -> pd.DataFrame:
        return pd.DataFrame()

    def export(self, out_dir: Path, split: Split) -> dict[str, str]:
        return {}

    def inference_cost(self) -> dict[str, float]:
        return {}


def test_the_protocol_check_rejects_models_that_only_look_complete():
    assert protocol_gaps(_Complete) == []

    class NoExport:
        fit, rank, inference_cost = _Complete.fit, _Complete.rank, _Complete.inference_cost

    class StubCost(_Complete):
        def inference_cost(self) -> dict[str, float]:
            raise NotImplementedError

    class ForgotExport(Recommender):  # subclasses the Protocol: inherits its `...` export
        fit, rank, inference_cost = _Complete.fit, _Complete.rank, _Complete.inference_cost

    class OtherRank(_Complete):
        def rank(self, histories: Mapping[str, Sequence[str]]) -> pd.DataFrame:
            return pd.DataFrame()

    class ListRank(_Complete):
        def rank(self, histories: Mapping[str, Sequence[str]], k: int) -> list:
            return []

    class ForgotDecode(LLMRecommender):  # everything but how items are read out
        def prepare(self, split: Split) -> dict:
            return {}

        def prompt(self, history):
            return None

        def training_examples(self, split, rng):
            return []

    assert protocol_gaps(NoExport) == ["export: not implemented"]
    assert protocol_gaps(StubCost) == ["StubCost.inference_cost: a stub"]
    assert protocol_gaps(ForgotExport) == ["export: only the Protocol's stub"]
    assert protocol_gaps(OtherRank) == [
        f"OtherRank.rank{inspect.signature(OtherRank.rank)}: "
        f"expected {inspect.signature(Recommender.rank)}"
    ]
    assert protocol_gaps(ListRank) == [f"ListRank.rank: return is {list}, expected {pd.DataFrame}"]
    assert protocol_gaps(ForgotDecode) == [
        "LLMRecommender.decode: left to subclasses, not implemented"
    ]
    # the old check (isinstance on the runtime_checkable Protocol) caught only the first
    assert not isinstance(NoExport(), Recommender)
    let_through = [StubCost(), ForgotExport(), OtherRank(), ListRank()]
    let_through.append(ForgotDecode(LLMConfig(), seed=0, device="cpu"))
    assert all(isinstance(model, Recommender) for model in let_through)


def test_a_model_whose_inputs_were_not_resolved_is_refused():
    with pytest.raises(
        ValueError,
        match=r"emb_knn: input 'embeddings' was not resolved \(it consumes: embeddings\)",
    ):
        build_model("emb_knn", {}, seed=0, device="cpu")


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_every_artifact_builder_and_config_resolve(name):
    spec = ARTIFACTS[name]
    assert callable(import_object(spec.builder)) and spec.files
    with pytest.raises(ParamsError, match=rf"{name}: unknown parameter 'nope'"):
        check_params(spec, {"nope": 1})


DEFAULT_GRID = Path(__file__).resolve().parents[1] / "benchmarks" / "default.yaml"


@pytest.mark.parametrize("name", STANDALONE)
def test_the_logged_hyperparameters_are_the_config_the_model_was_built_with(name):
    """Field by field, for every registered model (the default grid's params where it lists the
    model): what MLflow's hp.* and run.json record is what the recommender holds, variants'
    overrides included."""
    import dataclasses

    from llm4rec.config import load_grid
    from llm4rec.models import flat
    from llm4rec.tracking import describe_run

    grid = load_grid(DEFAULT_GRID)
    params = grid.model_params(name, "ml-100k") if name in grid.models else {}
    spec = MODELS[name]
    inputs = {
        slot: ResolvedInput({f: Path(f) for f in s.files}, "test")
        for slot, s in spec.inputs.items()
    }
    model = build_model(name, params, seed=0, device="cpu", inputs=inputs)
    config = {
        "model": name,
        "paradigm": spec.paradigm,
        "dataset": "ml-100k",
        "seed": 0,
        "params": params,
    }
    logged = {
        key[3:]: value for key, value in describe_run(config)[0].items() if key.startswith("hp.")
    }
    assert logged or name == "mostpop"  # MostPop has no hyper-parameter
    held = getattr(model, "cfg", None)
    if dataclasses.is_dataclass(held):
        built = flat(dataclasses.asdict(held))
        for key, value in logged.items():
            assert key in built and built[key] == value, (name, key, value, built.get(key))
    else:  # a library-configured model: every param the grid chose is logged as chosen
        assert {k: logged[k] for k in params} == params
    # prompt text: hashed as prompt_template, not hp.*
    template = describe_run(config)[1]["prompt_template"]
    for key, value in (flat(spec.overrides) | flat(spec.not_applicable)).items():
        assert (template[key] if key in template else logged[key]) == value, (name, key)


def test_variants_are_their_parent_plus_overrides():
    from llm4rec.models import variant_params

    entangled = MODELS["idiomoe_entangled"]
    assert entangled.parent == "idiomoe" and MODELS[entangled.parent].paradigm == entangled.paradigm
    resolved = variant_params(entangled, {"max_history": 5})
    assert resolved["expert_layers"] == "none" and resolved["max_history"] == 5
    # the variant's default...
    assert resolved["lora"]["target_modules"] == [
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert variant_params(entangled, {"lora": {"rank": 4}})["lora"] == {
        "rank": 4,
        "alpha": 32,
        "dropout": 0.0,
        "target_modules": ["gate_proj", "up_proj", "down_proj"],
    }
    assert variant_params(entangled, {"lora": None})["lora"] is None  # ...which a grid may change
    # repeating an override: fine
    assert variant_params(entangled, {"expert_layers": "none"})["expert_layers"] == "none"
    with pytest.raises(
        ParamsError,
        match=r"idiomoe_entangled: params.expert_layers is 'last_8', but idiomoe_entangled is "
        r"idiomoe with expert_layers = 'none'",
    ):
        variant_params(entangled, {"expert_layers": "last_8"})
    for spec in MODELS.values():
        assert spec.parent is None or spec.parent in MODELS, spec.name
        assert spec.parent is not None or not (
            spec.overrides or spec.defaults or spec.not_applicable
        ), spec.name


def test_a_variant_of_a_variant_inherits_what_made_its_parent_one():
    """A grandchild is its parent plus its own changes, as a subclass is: the parent's overrides,
    defaults and not-applicable settings carry down (nested keys merged), its references do not."""
    from llm4rec.models.spec import collect, variant

    base = ModelSpec("base", "baseline", "m:build", config="m:Config")
    specs = collect(
        [
            base,
            variant("child", "base", "", "", overrides={"a": 1, "cf": {"x": 1}}, references=("r",)),
            variant("grandchild", "child", "", "", overrides={"cf": {"y": 2}}, defaults={"d": 3}),
            variant("great", "grandchild", "", "", not_applicable={"epochs": 0}),
        ]
    )
    assert specs["grandchild"].overrides == {"a": 1, "cf": {"x": 1, "y": 2}}
    assert specs["great"].overrides == specs["grandchild"].overrides
    assert specs["great"].defaults == {"d": 3} and specs["great"].not_applicable == {"epochs": 0}
    assert specs["child"].references == ("r",) and specs["grandchild"].references == ()
    # in the registry: the linear probe's untrained and LLM-state rows are linear probes by descent
    for name in ("alpharec_linear_untrained", "alpharec_linear_llm"):
        assert MODELS[name].overrides == MODELS["alpharec_linear"].overrides != {}


def test_a_nested_mapping_fills_in_the_fields_own_default():
    """`cf: {permuted: true}` on a row whose `cf` defaults to a linear projector keeps it linear:
    the given keys replace those of the field's default, at every depth, not the nested class's."""
    import dataclasses

    from llm4rec.params import from_params

    @dataclasses.dataclass(frozen=True)
    class Inner:
        a: int = 1
        b: str = "class"

    @dataclasses.dataclass(frozen=True)
    class Middle:
        inner: Inner = dataclasses.field(default_factory=lambda: Inner(b="middle"))
        c: int = 0

    @dataclasses.dataclass(frozen=True)
    class Outer:
        middle: Middle = dataclasses.field(default_factory=lambda: Middle(Inner(b="outer"), c=5))
        plain: Inner = dataclasses.field(default_factory=Inner)
        optional: Inner | None = None

    parsed = from_params(Outer, {"middle": {"inner": {"a": 2}}, "optional": {"a": 3}}, "m")
    assert parsed.middle == Middle(Inner(a=2, b="outer"), c=5)
    assert parsed.optional == Inner(a=3, b="class")  # no default instance: the class's defaults
    assert from_params(Outer, {"plain": {"b": "given"}}, "m").plain == Inner(1, "given")
    with pytest.raises(ParamsError, match=r"m: unknown parameter 'middle.inner.z'"):
        from_params(Outer, {"middle": {"inner": {"z": 1}}}, "m")


def test_every_variant_differs_from_its_parent_only_where_it_says():
    """Parsed with no grid params, a variant's config equals its parent's except at the keys its
    overrides, defaults and not-applicable settings name (or a section they switch on, which the
    parent leaves None): an ablation changes one thing."""
    from llm4rec.models import as_data, check_params, flat

    checked = 0
    for spec in MODELS.values():
        parent = MODELS.get(spec.parent) if spec.parent else None
        if parent is None or spec.config is None or spec.config != parent.config:
            continue
        said = set(flat(spec.overrides) | flat(spec.defaults) | flat(spec.not_applicable))
        mine, theirs = (flat(as_data(check_params(s, {}))) for s in (spec, parent))
        changed = {k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)}
        said |= {
            section
            for key in list(said)
            for section in (key.rsplit(".", n)[0] for n in range(1, key.count(".") + 1))
            if section in theirs and theirs[section] is None
        }
        unsaid = {k for k in changed if not any(k == s or k.startswith(f"{s}.") for s in said)}
        assert not unsaid, (spec.name, {k: (theirs.get(k), mine.get(k)) for k in unsaid})
        checked += 1
    assert checked >= 10


def test_the_run_hash_covers_resolved_params_so_a_changed_default_changes_it(monkeypatch):
    import dataclasses

    from llm4rec.config import load_grid

    grid = load_grid(DEFAULT_GRID)
    before = {m: grid.run_hash("ml-100k", m, 0) for m in ("idiomoe", "idiomoe_entangled", "bpr")}
    assert grid.run_config("ml-100k", "idiomoe_entangled", 0)["params"]["expert_layers"] == "none"
    monkeypatch.setitem(
        MODELS,
        "idiomoe",
        dataclasses.replace(MODELS["idiomoe"], config="tests.test_models:ChangedDefault"),
    )
    # only a default changed, not the grid
    assert grid.run_hash("ml-100k", "idiomoe", 0) != before["idiomoe"]
    assert grid.run_hash("ml-100k", "idiomoe_entangled", 0) == before["idiomoe_entangled"]
    assert grid.run_hash("ml-100k", "bpr", 0) == before["bpr"]


def _changed_default():
    import dataclasses

    from llm4rec.paradigms.idiomoe import IdiomoeConfig

    @dataclasses.dataclass(frozen=True)
    class ChangedDefault(IdiomoeConfig):
        item_init: str = "random"

    return ChangedDefault


ChangedDefault = _changed_default()


def test_a_model_built_from_the_adding_a_model_page_runs_and_plan_and_smoke_take_it(
    tiny_split, tmp_path, monkeypatch
):
    """The page's whole baseline module and its rows module, copied from docs/adding-a-model.md,
    and a grid entry: the registry collects the row with no edit anywhere else; it trains and
    ranks; `llm4rec plan` costs it by its own `estimate_cost`, `llm4rec smoke` and the rerun
    test's generated grid take it at its own `toy_params`, and MLflow logs its own budget."""
    import yaml

    from llm4rec.config import DEFAULT_CONFIG, load_grid
    from llm4rec.models import PARADIGMS, collect_rows, row_modules, rows
    from llm4rec.plan import cell_cost
    from llm4rec.smoke import smoke_entry
    from llm4rec.tracking import describe_run

    from .helpers.rerun import toy_grid, write_dataset

    page = (Path(__file__).parents[1] / "docs" / "adding-a-model.md").read_text()
    section = page.split("## What the module tells the harness", 1)[1]
    module, row = (block.split("```")[0] for block in section.split("```python\n")[1:3])
    (tmp_path / "counts_model.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "counts.py").write_text(row)  # as if in llm4rec/models/rows/
    monkeypatch.setattr(rows, "__path__", [str(tmp_path / "rows"), *rows.__path__])
    paradigms, registry = collect_rows(row_modules())
    assert paradigms == PARADIGMS and {n: s for n, s in registry.items() if n != "counts"} == MODELS
    spec = registry["counts"]
    assert (spec.paradigm, spec.factory, spec.display) == (
        "baseline",
        "counts_model:build",
        "Counts",
    )
    monkeypatch.setitem(MODELS, "counts", spec)

    model = build_model("counts", {"epochs": 3}, seed=0, device="cpu")
    assert model.fit(tiny_split, tmp_path) == {"epochs": 3}
    # training items (tiny_split): a 2, b 2, e 1, c d f 0; after a and b: e, then c (catalogue
    # order among the zeros)
    ranked = model.rank({"u1": ["a", "b"]}, k=2)
    assert list(ranked.columns) == ["user_id", "rank", "item_id", "score"]
    assert ranked[["rank", "item_id", "score"]].values.tolist() == [[1, "e", 1.0], [2, "c", 0.0]]

    raw = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    entry = {"name": "counts", "params": {"epochs": 3}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(raw | {"models": [entry]}))
    grid = load_grid(tmp_path / "grid.yaml")
    stats = {"users": 943.0, "items": 1682.0, "train_interactions": 97_000.0, "title_tokens": 9.0}
    estimate = cell_cost(grid, grid.datasets[0], "counts", stats)
    assert estimate.train_flops == 3 * 97_000 and estimate.small
    assert estimate.forward_flops == 2 * 943 * 1682 * 64
    assert smoke_entry(entry, grid, {}, {}, "float32")["params"] == {"epochs": 1}
    run = grid.run_spec(grid.datasets[0], "counts", 0)
    assert run.config == import_object("counts_model:CountsConfig")(epochs=3)
    assert describe_run(run.record)[0]["budget.train"] == "3 epochs"
    # the rerun and contract tests' grid (generated from the registry) runs it at its toy cost
    (tmp_path / "toy").mkdir()
    write_dataset(tmp_path / "toy")
    rerun = {e["name"]: e for e in toy_grid(tmp_path / "toy")["models"]}
    assert rerun["counts"]["params"] == {"epochs": 1} and len(rerun) == len(MODELS)
