"""Grid config validation: every error names file, key path and expectation."""

from pathlib import Path

import pytest
import yaml

from llm4rec.config import DEFAULT_CONFIG, ConfigError, load_grid
from llm4rec.models import MODELS

GOOD = {
    "name": "t",
    "seeds": [0],
    "datasets": {"ml-100k": {"source": "ml-100k"}},
    "models": [{"name": "mostpop"}, {"name": "bpr", "params": {"epochs": 1}}],
}


def write(tmp_path, cfg, text=None):
    path = tmp_path / "grid.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(cfg))
    return path


def test_shipped_configs_are_valid():
    for name in ("default.yaml", "paper.yaml", "new_items.yaml"):
        grid = load_grid(DEFAULT_CONFIG.parent / name)
        assert grid.runs()
    new_items = load_grid(DEFAULT_CONFIG.parent / "new_items.yaml")
    assert all(new_items.dataset_config(d).get("new_items") for d in new_items.datasets)


def test_good_config_resolves_defaults(tmp_path):
    grid = load_grid(write(tmp_path, GOOD))
    assert grid.cutoffs == [5, 10, 20, 50]
    assert grid.dataset_config("ml-100k")["split"]["method"] == "leave_one_out"
    assert grid.run_hash("ml-100k", "bpr", 0) != grid.run_hash("ml-100k", "bpr", 1)


def declared_defaults(node: dict, path: tuple = ()):
    """(key path, default) of every leaf default llm4rec/schema.yaml declares ('*': any key)."""
    children = dict(node.get("properties", {}))
    if isinstance(node.get("additionalProperties"), dict):
        children["*"] = node["additionalProperties"]
    for key, sub in children.items():
        if "default" in sub and "properties" not in sub:
            yield path + (key,), sub["default"]
        yield from declared_defaults(sub, path + (key,))


def test_a_missing_optional_key_gets_the_schemas_default(tmp_path):
    """The schema's `default:` values are the grid's defaults (written nowhere else), filled in
    when a grid is loaded; a key the grid gives keeps its value."""
    from llm4rec import schema
    from llm4rec.report.build import REPORT_DEFAULTS
    from llm4rec.report.compare import CompareSpec

    given = GOOD | {
        "report": {"test": "wilcoxon"},
        "datasets": {"ml-100k": {"source": "ml-100k", "split": {"seed": 3}}},
    }
    grid = load_grid(write(tmp_path, given))
    found = list(declared_defaults(yaml.safe_load(schema.SCHEMA_PATH.read_text())))
    assert len(found) > 20
    for path, default in found:
        value = grid.raw
        for key in path:
            value = value["ml-100k" if key == "*" else key]
        expected = {("report", "test"): "wilcoxon", ("datasets", "*", "split", "seed"): 3}
        assert value == expected.get(path, default), path
    assert (
        grid.results_dir.name == "results" and grid.threads == 1 and grid.cutoffs == [5, 10, 20, 50]
    )
    assert grid.report_options() == REPORT_DEFAULTS | {"test": "wilcoxon"}
    assert REPORT_DEFAULTS == schema.defaults("report")
    spec = CompareSpec()
    assert (list(spec.metrics), spec.test, spec.alpha, spec.rounds) == (
        REPORT_DEFAULTS["metrics"],
        "auto",
        REPORT_DEFAULTS["alpha"],
        REPORT_DEFAULTS["randomization_rounds"],
    )


def test_unknown_model_name(tmp_path):
    cfg = GOOD | {
        "models": [{"name": "mostpop"}, {"name": "bpr"}, {"name": "lightgcn"}, {"name": "sasrek"}]
    }
    with pytest.raises(
        ConfigError,
        match=r"grid\.yaml: models\[3\]\.name 'sasrek' is not a known model \(known: .*bpr, "
        r".*lightgcn, mostpop, .*sasrec",
    ):
        load_grid(write(tmp_path, cfg))


def test_typo_in_key(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"grid\.yaml: <top level>: Additional properties are not allowed \('sedds' was "
        r"unexpected\)",
    ):
        load_grid(
            write(
                tmp_path,
                {k: v for k, v in GOOD.items() if k != "seeds"} | {"sedds": [0], "seeds": [0]},
            )
        )
    cfg = GOOD | {"datasets": {"ml-100k": {"source": "ml-100k", "k_cor": {"user": 5}}}}
    with pytest.raises(
        ConfigError,
        match=r"datasets\.ml-100k: Additional properties are not allowed \('k_cor' was "
        r"unexpected\)",
    ):
        load_grid(write(tmp_path, cfg))


def test_wrong_types_and_missing_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"seeds\[0\]: 'zero' is not of type 'integer'"):
        load_grid(write(tmp_path, GOOD | {"seeds": ["zero"]}))
    with pytest.raises(ConfigError, match=r"<top level>: 'models' is a required property"):
        load_grid(write(tmp_path, {k: v for k, v in GOOD.items() if k != "models"}))


def test_grid_without_validation_split_is_refused(tmp_path):
    cfg = GOOD | {
        "datasets": {
            "ml-100k": {
                "source": "ml-100k",
                "split": {"method": "global_temporal", "valid_frac": 0},
            }
        }
    }
    with pytest.raises(
        ConfigError,
        match=r"datasets\.ml-100k\.split\.valid_frac: 0 is less than or equal to the minimum of 0",
    ):
        load_grid(write(tmp_path, cfg))


def test_unknown_source_and_malformed_yaml(tmp_path):
    with pytest.raises(
        ConfigError, match=r"datasets\.ml-100k\.source 'ml-100m' is not a known source"
    ):
        load_grid(write(tmp_path, GOOD | {"datasets": {"ml-100k": {"source": "ml-100m"}}}))
    with pytest.raises(ConfigError, match=r"grid\.yaml: not valid YAML"):
        load_grid(write(tmp_path, None, text="name: [unclosed\n"))
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_grid(tmp_path / "missing.yaml")


def test_dataset_params_must_name_a_dataset(tmp_path):
    cfg = GOOD | {"models": [{"name": "bpr", "dataset_params": {"ml-1m": {"epochs": 2}}}]}
    with pytest.raises(ConfigError, match=r"models\[0\]\.dataset_params\.ml-1m: no such dataset"):
        load_grid(write(tmp_path, cfg))


def test_report_metric_needs_an_evaluated_cutoff(tmp_path):
    cfg = GOOD | {
        "evaluation": {"cutoffs": [5, 10]},
        "report": {"metrics": ["ndcg_at_10", "hr_at_20"]},
    }
    with pytest.raises(
        ConfigError,
        match=r"report\.metrics\[1\] 'hr_at_20' uses a cutoff not in evaluation\.cutoffs \(\[5, "
        r"10\]\)",
    ):
        load_grid(write(tmp_path, cfg))
    with pytest.raises(
        ConfigError,
        match=r"report\.test: 'z' is not one of "
        r"\['auto', 't', 'wilcoxon', 'randomization', 'mcnemar'\]",
    ):
        load_grid(write(tmp_path, GOOD | {"report": {"test": "z"}}))
    # the default metrics (@20 among them) are no error: beyond the cutoffs, a dash in the table
    grid = load_grid(write(tmp_path, GOOD | {"evaluation": {"cutoffs": [5, 10]}}))
    assert grid.cutoffs == [5, 10]
    # nor written back as a resolved config (a smoke grid, a retargeted grid): the same grid
    assert load_grid(write(tmp_path, grid.raw)).raw == grid.raw


def test_model_entry_narrows_seeds_threads_and_evaluation(tmp_path):
    llm = {
        "name": "text_prompted",
        "seeds": [0],
        "threads": 2,
        "evaluation": {"cutoffs": [10, 20], "test_users": 300, "valid_users": 100},
    }
    grid = load_grid(write(tmp_path, GOOD | {"seeds": [0, 1], "models": GOOD["models"] + [llm]}))
    assert [r for r in grid.runs() if r[1] == "text_prompted"] == [("ml-100k", "text_prompted", 0)]
    assert (
        len(grid.runs()) == 5
        and grid.model_threads("text_prompted") == 2
        and grid.model_threads("bpr") == 1
    )
    assert grid.model_evaluation("text_prompted") == {
        "cutoffs": [10, 20],
        "test_users": 300,
        "valid_users": 100,
        "sample_seed": 0,
    }
    assert grid.model_evaluation("bpr") == {
        "cutoffs": [5, 10, 20, 50],
        "test_users": None,
        "valid_users": None,
        "sample_seed": 0,
    }
    assert "evaluation" in grid.run_config("ml-100k", "text_prompted", 0)
    # unchanged hashes for models that do not narrow
    assert "evaluation" not in grid.run_config("ml-100k", "bpr", 0)


def test_model_cutoffs_must_be_grid_cutoffs(tmp_path):
    cfg = GOOD | {"models": [{"name": "mostpop", "evaluation": {"cutoffs": [10, 15]}}]}
    with pytest.raises(
        ConfigError,
        match=r"grid\.yaml: models\[0\]\.evaluation\.cutoffs: \[15\] not in evaluation\.cutoffs",
    ):
        load_grid(write(tmp_path, cfg))
    cfg = GOOD | {"models": [{"name": "mostpop", "evaluation": {"test_user": 10}}]}
    with pytest.raises(
        ConfigError,
        match=r"models\[0\]\.evaluation: Additional properties are not allowed \('test_user'",
    ):
        load_grid(write(tmp_path, cfg))


def test_every_model_params_are_checked_when_the_grid_is_validated(tmp_path):
    """A typo in any model's params fails at validation (before any job), naming the key."""
    llm = {"name": "text_prompted", "params": {"beam_widht": 10}}
    with pytest.raises(
        ConfigError,
        match=r"models\[2\]\.params: text_prompted: unknown parameter 'beam_widht' \(known: "
        r".*beam_width",
    ):
        load_grid(write(tmp_path, GOOD | {"models": GOOD["models"] + [llm]}))
    llm = {"name": "text_prompted", "params": {"sft": {"stepz": 3}}}
    with pytest.raises(
        ConfigError,
        match=r"models\[2\]\.params: text_prompted: unknown parameter 'sft\.stepz' \(known: "
        r"batch_size",
    ):
        load_grid(write(tmp_path, GOOD | {"models": GOOD["models"] + [llm]}))
    with pytest.raises(
        ConfigError,
        match=r"models\[1\]\.params: bpr: unknown parameter 'learning_rat' \(not a RecBole "
        r"1\.2\.1 config key for BPR; similar: .*learning_rate",
    ):
        load_grid(
            write(
                tmp_path,
                GOOD
                | {
                    "models": [
                        {"name": "mostpop"},
                        {"name": "bpr", "params": {"learning_rat": 0.1}},
                    ]
                },
            )
        )
    bad = {"name": "sasrec", "dataset_params": {"ml-100k": {"MAX_ITEM_LIST_LENGHT": 5}}}
    with pytest.raises(
        ConfigError,
        match=r"models\[1\]\.dataset_params\.ml-100k: sasrec: unknown parameter "
        r"'MAX_ITEM_LIST_LENGHT'",
    ):
        load_grid(write(tmp_path, GOOD | {"models": [{"name": "mostpop"}, bad]}))
    with pytest.raises(
        ConfigError, match=r"models\[0\]\.params: emb_knn: unknown parameter 'k' \(known: recent\)"
    ):
        load_grid(
            write(
                tmp_path,
                GOOD | {"models": [{"name": "emb_knn", "params": {"k": 3}}, {"name": "bpr"}]},
            )
        )
    # RecBole keys that only its model code reads (not its YAML) are known too
    load_grid(
        write(tmp_path, GOOD | {"models": [{"name": "lightgcn", "params": {"require_pow": True}}]})
    )


def consumer_grid(tmp_path, **changes):
    cfg = (
        GOOD
        | {
            "seeds": [0, 1],
            "models": [{"name": "bpr", "params": {"epochs": 1}}, {"name": "emb_knn"}],
        }
        | changes
    )
    return load_grid(write(tmp_path, cfg))


def test_a_consumer_run_resolves_its_upstream_and_carries_its_config_hash(tmp_path):
    grid = consumer_grid(tmp_path)
    source = grid.input_sources("ml-100k", "emb_knn", 1)["embeddings"]
    assert (source.kind, source.name, source.seed) == ("run", "bpr", 1)
    assert source.folder == grid.run_dir("ml-100k", "bpr", 1) / "exports"
    assert source.config_hash == grid.run_hash("ml-100k", "bpr", 1)
    assert (
        grid.run_config("ml-100k", "emb_knn", 1)["inputs"]["embeddings"]["config_hash"]
        == source.config_hash
    )
    # a changed upstream changes the consumer's hash (a rerun); the consumer's config is unchanged
    changed = consumer_grid(
        tmp_path, models=[{"name": "bpr", "params": {"epochs": 2}}, {"name": "emb_knn"}]
    )
    assert changed.run_hash("ml-100k", "emb_knn", 1) != grid.run_hash("ml-100k", "emb_knn", 1)
    pinned = consumer_grid(
        tmp_path,
        models=[
            {"name": "bpr"},
            {"name": "emb_knn", "inputs": {"embeddings": {"run": "bpr", "seed": 0}}},
        ],
    )
    assert pinned.input_sources("ml-100k", "emb_knn", 1)["embeddings"].seed == 0
    artifact = consumer_grid(
        tmp_path,
        models=[
            {
                "name": "emb_knn",
                "inputs": {"embeddings": {"artifact": "item_text_lsa", "params": {"dim": 8}}},
            }
        ],
    )
    source = artifact.input_sources("ml-100k", "emb_knn", 0)["embeddings"]
    assert (
        source.kind == "artifact" and source.seed is None and source.marker.name == "artifact.json"
    )
    # not per seed: one artifact
    assert artifact.input_sources("ml-100k", "emb_knn", 1)["embeddings"] == source
    assert list(artifact.artifacts()) == [("ml-100k", "item_text_lsa", source.config_hash)]


@pytest.mark.parametrize(
    "models, message",
    [
        (
            [{"name": "emb_knn"}],
            r"models\[0\]\.inputs\.embeddings\.run: 'bpr' is not a model of this grid \(models: "
            r"emb_knn\)",
        ),
        (
            [
                {"name": "mostpop"},
                {"name": "emb_knn", "inputs": {"embeddings": {"run": "mostpop"}}},
            ],
            r"models\[1\]\.inputs\.embeddings\.run: 'mostpop' does not export "
            r"item_embeddings\.npy \(it writes: scores_valid\.npy, users_valid\.txt, "
            r"scores_test\.npy, users_test\.txt\)",
        ),
        (
            [{"name": "bpr"}, {"name": "emb_knn", "inputs": {"embedding": {"run": "bpr"}}}],
            r"models\[1\]\.inputs\.embedding: model 'emb_knn' consumes no input 'embedding' \(its "
            r"inputs: embeddings\)",
        ),
        (
            [{"name": "bpr", "seeds": [0]}, {"name": "emb_knn"}],
            r"models\[1\]\.inputs\.embeddings: 'emb_knn' seed 1 consumes 'bpr' seed 1, which the "
            r"grid does not run \('bpr' seeds: \[0\]\)",
        ),
        (
            [{"name": "emb_knn", "inputs": {"embeddings": {"artifact": "codes"}}}],
            r"models\[0\]\.inputs\.embeddings\.artifact: 'codes' is not a known artifact \(known: "
            r"item_text_embeddings, item_text_lsa, llm_states, semantic_ids\)",
        ),
        (
            [
                {
                    "name": "emb_knn",
                    "inputs": {"embeddings": {"artifact": "item_text_lsa", "params": {"dims": 3}}},
                }
            ],
            r"models\[0\]\.inputs\.embeddings\.params: item_text_lsa: unknown parameter 'dims'",
        ),
        (
            [
                {"name": "bpr"},
                {
                    "name": "emb_knn",
                    "inputs": {"embeddings": {"run": "bpr", "artifact": "item_text_lsa"}},
                },
            ],
            r"models\[1\]\.inputs\.embeddings: give exactly one of 'run: MODEL' or 'artifact: "
            r"NAME'",
        ),
    ],
)
def test_bad_inputs_are_named(tmp_path, models, message):
    with pytest.raises(ConfigError, match=message):
        consumer_grid(tmp_path, models=models)


def test_selection_metric_defaults_and_overrides(tmp_path):
    grid = load_grid(write(tmp_path, GOOD))
    assert grid.selection_metric("bpr") == "ndcg_at_10"
    # unchanged hashes under the default
    assert "selection_metric" not in grid.run_config("ml-100k", "bpr", 0)
    cfg = GOOD | {
        "evaluation": {"selection_metric": "hr_at_20"},
        "models": [
            {"name": "mostpop"},
            {"name": "bpr", "evaluation": {"selection_metric": "recall_at_5"}},
        ],
    }
    grid = load_grid(write(tmp_path, cfg))
    assert (grid.selection_metric("mostpop"), grid.selection_metric("bpr")) == (
        "hr_at_20",
        "recall_at_5",
    )
    assert grid.run_config("ml-100k", "bpr", 0)["selection_metric"] == "recall_at_5"
    with pytest.raises(ConfigError, match=r"evaluation\.selection_metric: 'auc' does not match"):
        load_grid(write(tmp_path, GOOD | {"evaluation": {"selection_metric": "auc"}}))


def test_display_name_overrides_name_known_models(tmp_path):
    grid = load_grid(write(tmp_path, GOOD | {"report": {"display_names": {"bpr": "BPR-MF"}}}))
    assert grid.report_options()["display_names"] == {"bpr": "BPR-MF"}
    with pytest.raises(
        ConfigError, match=r"grid\.yaml: report\.display_names\.bprr: not a known model"
    ):
        load_grid(write(tmp_path, GOOD | {"report": {"display_names": {"bprr": "BPR-MF"}}}))


def test_main_job_and_ablation_target_split_the_grid_by_the_registry(tmp_path):
    """`make bench` runs every model that is not a registry variant; `make bench-ablations` the
    variants and the parents they are compared with; a variant without its parent is refused."""
    models = [
        {"name": "mostpop"},
        {"name": "idiomoe", "seeds": [0, 1]},
        {"name": "idiomoe_entangled", "seeds": [0]},
    ]
    grid = load_grid(write(tmp_path, GOOD | {"seeds": [0, 1], "models": models}))
    main = {(m, s) for _, m, s in grid.runs("main")}
    ablations = {(m, s) for _, m, s in grid.runs("ablations")}
    assert main == {("mostpop", 0), ("mostpop", 1), ("idiomoe", 0), ("idiomoe", 1)}
    # the variants, their parents, and the baselines each variant is also compared with
    assert ablations == {
        ("idiomoe", 0),
        ("idiomoe", 1),
        ("idiomoe_entangled", 0),
        ("mostpop", 0),
        ("mostpop", 1),
    }
    assert set(grid.runs("all")) == {(d, m, s) for d, m, s in grid.runs()} and len(
        grid.runs()
    ) == len(main | ablations)
    assert grid.report_dir("ablations") == grid.reports_dir / "ablations"
    # main_seeds: the main job runs those seeds; the ablations target runs the rest (and the report
    # there sets the row at every seed against the best baseline)
    grid = load_grid(
        write(
            tmp_path,
            GOOD | {"seeds": [0, 1], "models": [models[0], models[1] | {"main_seeds": [1]}]},
        )
    )
    assert {(m, s) for _, m, s in grid.runs("main")} == {
        ("mostpop", 0),
        ("mostpop", 1),
        ("idiomoe", 1),
    }
    assert {(m, s) for _, m, s in grid.runs("ablations")} == {
        ("mostpop", 0),
        ("mostpop", 1),
        ("idiomoe", 0),
        ("idiomoe", 1),
    }
    with pytest.raises(
        ConfigError, match=r"models\[1\]\.name 'idiomoe_entangled' is a variant of 'idiomoe'"
    ):
        load_grid(write(tmp_path, GOOD | {"models": [{"name": "mostpop"}, models[2]]}))


def test_max_history_is_one_top_level_key_for_every_paradigm(tmp_path):
    """Under sft (where text_prompted and cf_llara had it) it is refused, naming its new place."""
    from llm4rec.models import MODELS, check_params

    cfg = GOOD | {"models": [{"name": "text_prompted", "params": {"sft": {"max_history": 5}}}]}
    with pytest.raises(
        ConfigError,
        match=r"grid\.yaml: models\[0\]\.params: text_prompted: parameter 'sft\.max_history' "
        r"moved to 'max_history': give params\.max_history: 5 instead",
    ):
        load_grid(write(tmp_path, cfg))
    for name, spec in MODELS.items():
        config = check_params(spec, {})
        if hasattr(config, "sft"):
            assert isinstance(config.max_history, int), name
            assert not hasattr(config.sft, "max_history"), name


def test_a_record_written_before_the_move_of_max_history_reads_with_it_moved():
    """llm4rec.reproduce reads an old run.json's params with sft.max_history at its new place."""
    from llm4rec.params import moved_to_today

    old = {"sft": {"steps": 3, "max_history": 5}}
    assert moved_to_today(old) == {"sft": {"steps": 3}, "max_history": 5}


# -- zero-shot transfer: a run consumed from another dataset ------------------------------------
TRANSFER = GOOD | {
    "datasets": {
        "ml-100k": {"source": "ml-100k"},
        "other": {"source": "ml-100k", "role": "source", "sample_users": 100},
    },
    "models": [
        {"name": "alpharec"},
        {
            "name": "alpharec_zeroshot",
            "inputs": {"source": {"run": "alpharec", "dataset": "other"}},
        },
    ],
}


def test_a_source_dataset_runs_only_what_is_transferred_from_it(tmp_path):
    grid = load_grid(write(tmp_path, TRANSFER))
    assert grid.evaluated_datasets == ["ml-100k"]
    assert {d for d, _, _ in grid.runs()} == {"ml-100k"}
    assert grid.source_runs() == [("other", "alpharec", 0)]
    source = grid.input_sources("ml-100k", "alpharec_zeroshot", 0)["source"]
    assert source.dataset == "other" and "runs/other/alpharec/seed0" in str(source.folder)
    # the consumer's hash covers the source run's (trained on `other`) and names the dataset
    described = grid.run_config("ml-100k", "alpharec_zeroshot", 0)["inputs"]["source"]
    assert described["dataset"] == "other"
    assert described["config_hash"] == grid.run_hash("other", "alpharec", 0)
    # an input from the same dataset keeps its old description (and so every existing run hash)
    same = grid.run_config("ml-100k", "alpharec", 0)["inputs"]["text"]
    assert "dataset" not in same


@pytest.mark.parametrize(
    "inputs, message",
    [
        (
            {"source": {"run": "alpharec", "dataset": "nowhere"}},
            r"models\[1\]\.inputs\.source\.dataset: 'nowhere' is not a dataset of this grid "
            r"\(datasets: ml-100k, other\)",
        ),
        (
            {"source": {"run": "alpharec"}},
            r"models\[1\]\.inputs\.source: 'alpharec_zeroshot' transfers a model trained on "
            r"another dataset; name it with `dataset:`",
        ),
    ],
)
def test_bad_transfer_inputs_are_named(tmp_path, inputs, message):
    cfg = TRANSFER | {
        "models": [TRANSFER["models"][0], {"name": "alpharec_zeroshot", "inputs": inputs}]
    }
    with pytest.raises(ConfigError, match=message):
        load_grid(write(tmp_path, cfg))


def test_a_model_that_cannot_transfer_refuses_another_dataset(tmp_path):
    cfg = TRANSFER | {
        "models": [
            {"name": "bpr"},
            {"name": "emb_knn", "inputs": {"embeddings": {"run": "bpr", "dataset": "other"}}},
        ]
    }
    with pytest.raises(
        ConfigError,
        match=r"models\[1\]\.inputs\.embeddings\.dataset: 'emb_knn' cannot consume 'embeddings' "
        r"from another dataset",
    ):
        load_grid(write(tmp_path, cfg))


@pytest.mark.parametrize(
    ("models", "message"),
    [
        (
            [{"name": "idiomoe", "seeds": [0, 1], "main_seeds": [2]}],
            r"models\[0\]\.main_seeds: seed 2 is not one of the model's seeds \[0, 1\]",
        ),
        (
            [{"name": "idiomoe"}, {"name": "idiomoe_entangled", "main_seeds": [0]}],
            r"models\[1\]\.main_seeds: 'idiomoe_entangled' is a variant of 'idiomoe'",
        ),
        (
            [
                {"name": "sasrec", "main_seeds": [0]},
                {"name": "cf_e4srec", "inputs": {"cf_source": {"run": "sasrec"}}},
            ],
            r"models\[1\]\.inputs\.cf_source: 'cf_e4srec' seed 1 runs in the main job and "
            r"consumes 'sasrec' seed 1, which its main_seeds \[0\] leave to the ablations target",
        ),
    ],
)
def test_main_seeds_refused_where_the_main_job_could_not_run_them(tmp_path, models, message):
    with pytest.raises(ConfigError, match=message):
        load_grid(write(tmp_path, GOOD | {"seeds": [0, 1], "models": models}))


def test_a_model_restricted_to_some_datasets_and_the_split_keys_that_apply(tmp_path):
    two = GOOD | {
        "datasets": {
            "a": {"source": "ml-100k"},
            "b": {"source": "ml-100k", "split": {"method": "ratio", "ratios": [0.8, 0.1, 0.1]}},
        }
    }
    grid = load_grid(
        write(tmp_path, two | {"models": [{"name": "mostpop"}, {"name": "bpr", "datasets": ["b"]}]})
    )
    assert grid.runs() == [("a", "mostpop", 0), ("b", "mostpop", 0), ("b", "bpr", 0)]
    with pytest.raises(
        ConfigError, match=r"models\[1\].datasets\[0\] 'c' is not an evaluated dataset"
    ):
        load_grid(
            write(
                tmp_path,
                two | {"models": [{"name": "mostpop"}, {"name": "bpr", "datasets": ["c"]}]},
            )
        )
    consumer = {"name": "emb_knn", "inputs": {"embeddings": {"run": "bpr"}}}
    with pytest.raises(
        ConfigError, match=r"'emb_knn' runs on a, where 'bpr' does not \(its datasets: b\)"
    ):
        load_grid(write(tmp_path, two | {"models": [{"name": "bpr", "datasets": ["b"]}, consumer]}))
    for split, message in (
        (
            {"method": "ratio", "ratios": [0.8, 0.1, 0.2]},
            r"datasets.a.split.ratios \[0.8, 0.1, 0.2\]: train",
        ),
        (
            {"method": "ratio", "test_ties": "drop"},
            r"datasets.a.split.test_ties applies to method leave_one_out, not ratio",
        ),
        (
            {"ratios": [0.7, 0.15, 0.15]},
            r"datasets.a.split.ratios applies to method ratio, not leave_one_out",
        ),
    ):
        with pytest.raises(ConfigError, match=message):
            load_grid(
                write(tmp_path, GOOD | {"datasets": {"a": {"source": "ml-100k", "split": split}}})
            )
    # a resolved config (smoke grids, reproduce) writes every key back at its default: loads
    for method in ("leave_one_out", "ratio"):
        split = {"method": method, "ratios": [0.8, 0.1, 0.1], "test_ties": "keep"}
        dataset = {"a": {"source": "ml-100k", "split": split}}
        load_grid(write(tmp_path, GOOD | {"datasets": dataset}))


def test_several_gpus_are_refused_for_a_row_without_a_multi_process_path(tmp_path):
    """`resources.gpu` > 1 re-runs the job on N processes; a row that trains in one process (a
    RecBole baseline, AlphaRec, GRPO) would run N copies on one run folder: refused, named."""
    raw = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    for name, allowed in (("bpr", False), ("alpharec", False), ("text_prompted", True)):
        grid = raw | {"models": [m for m in raw["models"] if m["name"] in (name, "sasrec")]}
        entry = next(m for m in grid["models"] if m["name"] == name)
        entry["resources"] = {"gpu": 2}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(grid))
        if allowed:
            load_grid(path)
        else:
            with pytest.raises(ConfigError, match=rf"resources.gpu is 2: '{name}' .* Set gpu: 1"):
                load_grid(path)
    # the rows that declare the path: those train_sft fine-tunes and LLMRecommender ranks (their
    # variants too), never a stage over a parent's policy (GRPO, steered, exact, cold start)
    sft_modules = {
        "text_prompted",
        "cf_injected",
        "idiomoe",
        "semantic_id.tiger",
        "semantic_id.llm",
    }
    expected = {
        name
        for name, spec in MODELS.items()
        if spec.factory.split(":")[0].removeprefix("llm4rec.paradigms.") in sft_modules
        and "policy" not in spec.inputs
    }
    assert {name for name, spec in MODELS.items() if spec.multi_process} == expected
    assert {"text_prompted_zeroshot", "sid_random", "cf_llara_permuted"} <= expected


def test_an_artifact_input_s_resources_are_checked_and_the_largest_request_wins(tmp_path):
    """`resources` beside an artifact's `params`: known keys and integers only, named on error;
    two inputs naming the same artifact give its job the larger of each request."""
    raw = yaml.safe_load(Path(DEFAULT_CONFIG).read_text())
    lsa = {"artifact": "item_text_lsa"}
    models = [
        {
            "name": "emb_knn",
            "inputs": {"embeddings": lsa | {"resources": {"gpu": 1, "mem_mb": 900}}},
        },
        {"name": "mostpop"},
    ]
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(raw | {"models": models}))
    grid = load_grid(path)
    ((dataset, name, key),) = grid.artifacts()
    assert grid.artifact_resources(dataset, name, key) == {"gpu": 1, "mem_mb": 900, "runtime": 60}
    models[0]["inputs"]["embeddings"]["resources"] = {"gpus": 1}
    path.write_text(yaml.safe_dump(raw | {"models": models}))
    with pytest.raises(ConfigError, match=r"inputs.embeddings.resources.gpus: 1; an artifact job"):
        load_grid(path)
