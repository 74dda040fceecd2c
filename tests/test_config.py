"""Grid config validation: every error names file, key path and expectation."""

import pytest
import yaml

from llm4rec.config import DEFAULT_CONFIG, ConfigError, load_grid

GOOD = {
    "name": "t", "seeds": [0],
    "datasets": {"ml-100k": {"source": "ml-100k"}},
    "models": [{"name": "mostpop"}, {"name": "bpr", "params": {"epochs": 1}}],
}


def write(tmp_path, cfg, text=None):
    path = tmp_path / "grid.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(cfg))
    return path


def test_shipped_configs_are_valid():
    for name in ("default.yaml", "paper.yaml"):
        grid = load_grid(DEFAULT_CONFIG.parent / name)
        assert grid.runs()


def test_good_config_resolves_defaults(tmp_path):
    grid = load_grid(write(tmp_path, GOOD))
    assert grid.cutoffs == [5, 10, 20, 50]
    assert grid.dataset_config("ml-100k")["split"]["method"] == "leave_one_out"
    assert grid.run_hash("ml-100k", "bpr", 0) != grid.run_hash("ml-100k", "bpr", 1)


def test_unknown_model_name(tmp_path):
    cfg = GOOD | {"models": [{"name": "mostpop"}, {"name": "bpr"}, {"name": "lightgcn"}, {"name": "sasrek"}]}
    with pytest.raises(ConfigError, match=r"grid\.yaml: models\[3\]\.name 'sasrek' is not a known model \(known: bpr, lightgcn"):
        load_grid(write(tmp_path, cfg))


def test_typo_in_key(tmp_path):
    with pytest.raises(ConfigError, match=r"grid\.yaml: <top level>: Additional properties are not allowed \('sedds' was unexpected\)"):
        load_grid(write(tmp_path, {k: v for k, v in GOOD.items() if k != "seeds"} | {"sedds": [0], "seeds": [0]}))
    cfg = GOOD | {"datasets": {"ml-100k": {"source": "ml-100k", "k_cor": {"user": 5}}}}
    with pytest.raises(ConfigError, match=r"datasets\.ml-100k: Additional properties are not allowed \('k_cor' was unexpected\)"):
        load_grid(write(tmp_path, cfg))


def test_wrong_types_and_missing_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"seeds\[0\]: 'zero' is not of type 'integer'"):
        load_grid(write(tmp_path, GOOD | {"seeds": ["zero"]}))
    with pytest.raises(ConfigError, match=r"<top level>: 'models' is a required property"):
        load_grid(write(tmp_path, {k: v for k, v in GOOD.items() if k != "models"}))


def test_grid_without_validation_split_is_refused(tmp_path):
    cfg = GOOD | {"datasets": {"ml-100k": {"source": "ml-100k", "split": {"method": "global_temporal", "valid_frac": 0}}}}
    with pytest.raises(ConfigError, match=r"datasets\.ml-100k\.split\.valid_frac: 0 is less than or equal to the minimum of 0"):
        load_grid(write(tmp_path, cfg))


def test_unknown_source_and_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match=r"datasets\.ml-100k\.source 'ml-100m' is not a known source"):
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
    cfg = GOOD | {"evaluation": {"cutoffs": [5, 10]}, "report": {"metrics": ["ndcg_at_10", "hr_at_20"]}}
    with pytest.raises(ConfigError, match=r"report\.metrics\[1\] 'hr_at_20' uses a cutoff not in evaluation\.cutoffs \(\[5, 10\]\)"):
        load_grid(write(tmp_path, cfg))
    with pytest.raises(ConfigError, match=r"report\.test: 'z' is not one of \['t', 'wilcoxon', 'randomization'\]"):
        load_grid(write(tmp_path, GOOD | {"report": {"test": "z"}}))


def test_model_entry_narrows_seeds_threads_and_evaluation(tmp_path):
    llm = {"name": "text_prompted_zeroshot", "seeds": [0], "threads": 2,
           "evaluation": {"cutoffs": [10, 20], "test_users": 300, "valid_users": 100}}
    grid = load_grid(write(tmp_path, GOOD | {"seeds": [0, 1], "models": GOOD["models"] + [llm]}))
    assert [r for r in grid.runs() if r[1] == "text_prompted_zeroshot"] == [("ml-100k", "text_prompted_zeroshot", 0)]
    assert len(grid.runs()) == 5 and grid.model_threads("text_prompted_zeroshot") == 2 and grid.model_threads("bpr") == 1
    assert grid.model_evaluation("text_prompted_zeroshot") == {"cutoffs": [10, 20], "test_users": 300, "valid_users": 100,
                                                                "sample_seed": 0}
    assert grid.model_evaluation("bpr") == {"cutoffs": [5, 10, 20, 50], "test_users": None, "valid_users": None, "sample_seed": 0}
    assert "evaluation" in grid.run_config("ml-100k", "text_prompted_zeroshot", 0)
    assert "evaluation" not in grid.run_config("ml-100k", "bpr", 0)  # unchanged hashes for models that do not narrow


def test_model_cutoffs_must_be_grid_cutoffs(tmp_path):
    cfg = GOOD | {"models": [{"name": "mostpop", "evaluation": {"cutoffs": [10, 15]}}]}
    with pytest.raises(ConfigError, match=r"grid\.yaml: models\[0\]\.evaluation\.cutoffs: \[15\] not in evaluation\.cutoffs"):
        load_grid(write(tmp_path, cfg))
    cfg = GOOD | {"models": [{"name": "mostpop", "evaluation": {"test_user": 10}}]}
    with pytest.raises(ConfigError, match=r"models\[0\]\.evaluation: Additional properties are not allowed \('test_user'"):
        load_grid(write(tmp_path, cfg))
