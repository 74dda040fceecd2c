"""The README's bad-input matrix: one test per row. Each runs the `llm4rec` command a researcher
would run and checks the error names the file, field or key and what was expected, with nothing
written (or half-written) where the stage writes. Full disk / unwritable folder:
tests/test_faults.py."""

import socket

import numpy as np
import pandas as pd
import pytest
import yaml

from llm4rec.cli import main

HEADER = "user_id:token\titem_id:token\ttimestamp:float\n"
GOOD_ROWS = "".join(f"u{u}\ti{(u + j) % 7}\t{j}\n" for u in range(6) for j in range(5))


def grid_file(tmp_path, dataset: dict | None = None, models: list | None = None, **top) -> str:
    cfg = {
        "name": "t",
        "results_dir": str(tmp_path / "results"),
        "seeds": [0],
        "datasets": {
            "toy": dataset
            or {
                "source": "atomic",
                "path": str(tmp_path),
                "atomic_name": "toy",
                "k_core": {"user": 3, "item": 1},
            }
        },
        "models": models or [{"name": "mostpop"}],
        **top,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def split_dir(tmp_path):
    return tmp_path / "results" / "t" / "data" / "toy"


def prepare_fails(tmp_path, capsys, inter: str, item: str | None = None, **dataset) -> str:
    (tmp_path / "toy.inter").write_text(inter)
    if item is not None:
        (tmp_path / "toy.item").write_text(item)
    base = {
        "source": "atomic",
        "path": str(tmp_path),
        "atomic_name": "toy",
        "k_core": {"user": 3, "item": 1},
    }
    assert (
        main(["prepare", "--config", grid_file(tmp_path, base | dataset), "--dataset", "toy"]) == 2
    )
    # nothing written
    assert not split_dir(tmp_path).exists() or not any(split_dir(tmp_path).iterdir())
    return capsys.readouterr().err


def prepared(tmp_path, capsys, **top) -> str:
    (tmp_path / "toy.inter").write_text(HEADER + GOOD_ROWS)
    config = grid_file(tmp_path, **top)
    assert main(["prepare", "--config", config, "--dataset", "toy"]) == 0
    capsys.readouterr()
    return config


def test_wrong_delimiter_in_an_atomic_file(tmp_path, capsys):
    err = prepare_fails(tmp_path, capsys, HEADER.replace("\t", ",") + GOOD_ROWS.replace("\t", ","))
    assert (
        "toy.inter: the header 'user_id:token,item_id:token,timestamp:float' is comma-separated; "
        "atomic files separate fields with a tab" in err
    )


def test_wrong_header_types_in_an_atomic_file(tmp_path, capsys):
    err = prepare_fails(
        tmp_path, capsys, HEADER.replace("timestamp:float", "timestamp:token") + GOOD_ROWS
    )
    assert "toy.inter: field 'timestamp' must be of type float, header says 'token'" in err
    err = prepare_fails(
        tmp_path, capsys, HEADER.replace("timestamp:float", "timestamp:date") + GOOD_ROWS
    )
    assert "toy.inter: header column 'timestamp:date' is not 'name:type' with type in" in err


def test_a_line_with_more_fields_than_the_header(tmp_path, capsys):
    err = prepare_fails(tmp_path, capsys, HEADER + GOOD_ROWS + "u1\ti2\t7\textra\n")
    assert "toy.inter: a data line does not have the header's 3 tab-separated fields" in err


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("noon", "field 'timestamp' must be numeric (a finite number), got 'noon' on data line 31"),
        ("nan", "field 'timestamp' must be numeric (a finite number), got 'nan' on data line 31"),
        ("inf", "field 'timestamp' must be numeric (a finite number), got 'inf' on data line 31"),
        ("-5", "field 'timestamp' is negative (-5) on data line 31; expected a time"),
        ("", "field 'timestamp' is empty on data line 31"),
    ],
)
def test_non_numeric_nan_or_negative_timestamps(tmp_path, capsys, value, message):
    err = prepare_fails(tmp_path, capsys, HEADER + GOOD_ROWS + f"u1\ti2\t{value}\n")
    assert f"toy.inter: {message}" in err


def test_unknown_item_ids_in_inter(tmp_path, capsys):
    # no i6
    items = "item_id:token\tname:token_seq\n" + "".join(f"i{i}\tItem {i}\n" for i in range(6))
    err = prepare_fails(tmp_path, capsys, HEADER + GOOD_ROWS, items, unknown_items="error")
    assert (
        "toy.inter: item 'i6' on data line 15 is not in" in err
        and "toy.item (1 unknown items; unknown_items: keep" in err
    )


def test_users_with_fewer_than_3_interactions(tmp_path, capsys):
    rows = "".join(f"u{u}\ti{u % 3}\t{j}\n" for u in range(5) for j in range(2))  # every user has 2
    err = prepare_fails(tmp_path, capsys, HEADER + rows, k_core={"user": 1, "item": 1})
    assert (
        "dataset 'toy': split has no validation or no test interactions (leave-one-out holds out "
        "the last two interactions of each user with at least 3" in err
    )


def test_items_without_text_for_an_llm_paradigm(tmp_path, capsys):
    from .helpers import tiny_backbone

    model, tokenizer = tiny_backbone(["Item", "1", "2"], seed=0, layers=1)
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    (tmp_path / "toy.item").write_text(
        "item_id:token\tname:token_seq\n" + "".join(f"i{i}\tItem {i}\n" for i in range(6))
    )
    llm = {
        "name": "text_prompted",
        "params": {
            "backbone": {"name_or_path": str(tmp_path / "tiny")},
            "text_retention": {"enabled": False},
            "sft": {"steps": 1},
        },
    }
    dataset = {
        "source": "atomic",
        "path": str(tmp_path),
        "atomic_name": "toy",
        "k_core": {"user": 3, "item": 1},
        "text_fields": {"title": "name"},
    }
    config = prepared(tmp_path, capsys, dataset=dataset, models=[llm])  # i6 is kept, without text
    assert (
        main(
            [
                "train",
                "--config",
                config,
                "--dataset",
                "toy",
                "--model",
                "text_prompted",
                "--seed",
                "0",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "items.parquet: item 'i6' has an empty title (1 items without a title" in err
    assert not (
        tmp_path / "results" / "t" / "runs" / "toy" / "text_prompted" / "seed0" / "run.json"
    ).exists()


def test_an_empty_dataset_after_k_core(tmp_path, capsys):
    err = prepare_fails(tmp_path, capsys, HEADER + GOOD_ROWS, k_core={"user": 50, "item": 1})
    assert "dataset 'toy': no interactions left after preprocessing" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seedz": [0]}, "Additional properties are not allowed ('seedz' was unexpected)"),
        (
            {"evaluation": {"cutof": [10]}},
            "evaluation: Additional properties are not allowed ('cutof' was unexpected)",
        ),
        (
            {"report": {"metric": ["ndcg_at_10"]}},
            "report: Additional properties are not allowed ('metric' was unexpected)",
        ),
        (
            {"datasets": {"toy": {"source": "ml-100k", "k_cores": {"user": 5}}}},
            "datasets.toy: Additional properties are not allowed ('k_cores'",
        ),
        (
            {"models": [{"name": "bpr", "parms": {"epochs": 1}}]},
            "models[0]: Additional properties are not allowed ('parms'",
        ),
        ({"models": [{"name": "bpr", "params": {"epochz": 1}}]}, "epochz"),
        ({"models": [{"name": "text_prompted", "params": {"sft": {"stepz": 1}}}]}, "stepz"),
    ],
)
def test_config_typos_at_every_level(tmp_path, capsys, change, message):
    path = tmp_path / "grid.yaml"
    cfg = {
        "name": "t",
        "results_dir": str(tmp_path / "results"),
        "seeds": [0],
        "datasets": {"toy": {"source": "ml-100k"}},
        "models": [{"name": "mostpop"}],
    } | change
    path.write_text(yaml.safe_dump(cfg))
    assert main(["validate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err, err
    assert not (tmp_path / "results").exists()


def test_unknown_model_backbone_or_dataset(tmp_path, capsys):
    path = grid_file(tmp_path, models=[{"name": "sasrek"}])
    assert main(["validate", "--config", path]) == 2
    assert "models[0].name 'sasrek' is not a known model" in capsys.readouterr().err
    path = grid_file(tmp_path, dataset={"source": "ml-10m"})
    assert main(["validate", "--config", path]) == 2
    assert "ml-10m" in capsys.readouterr().err
    config = prepared(tmp_path, capsys)
    assert main(["prepare", "--config", config, "--dataset", "ml-1m"]) == 2
    assert "dataset 'ml-1m' is not in datasets (known: toy)" in capsys.readouterr().err
    llm = {
        "name": "text_prompted",
        "params": {
            "backbone": {"name_or_path": str(tmp_path / "no-such-model")},
            "text_retention": {"enabled": False},
        },
    }
    config = prepared(tmp_path, capsys, models=[llm])
    assert (
        main(
            [
                "train",
                "--config",
                config,
                "--dataset",
                "toy",
                "--model",
                "text_prompted",
                "--seed",
                "0",
            ]
        )
        == 2
    )
    assert (
        f"backbone '{tmp_path / 'no-such-model'}': not a model folder (no config.json)"
        in capsys.readouterr().err
    )
    assert not (
        tmp_path / "results" / "t" / "runs" / "toy" / "text_prompted" / "seed0" / "run.json"
    ).exists()


def test_a_prompt_template_without_its_slot(tmp_path, capsys):
    llm = {"name": "text_prompted", "params": {"prompt": {"user": "Recommend something."}}}
    path = grid_file(tmp_path, models=[llm])
    assert main(["validate", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "text_prompted" in err and "must contain the {history} slot" in err


def test_a_cf_injected_source_run_on_another_split(tmp_path, capsys):
    from llm4rec.io import write_json, write_npy

    cf = {"name": "cf_e4srec", "inputs": {"cf_source": {"run": "bpr"}}}
    config = prepared(tmp_path, capsys, models=[{"name": "bpr"}, cf])
    from llm4rec.config import load_grid

    grid = load_grid(config)
    upstream = grid.run_dir("toy", "bpr", 0)
    write_npy(upstream / "exports" / "item_embeddings.npy", np.ones((7, 4)))
    write_json(
        upstream / "run.json",
        {
            "split_checksums": {"interactions.parquet": "another split"},
            "config_hash": grid.run_hash("toy", "bpr", 0),
            "files": {},
        },
    )
    assert (
        main(
            ["train", "--config", config, "--dataset", "toy", "--model", "cf_e4srec", "--seed", "0"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        f"{grid.run_dir('toy', 'cf_e4srec', 0)} consumes 'cf_source' from run 'bpr' seed 0" in err
    )
    assert f"{upstream}/run.json was built on another split than {grid.split_dir('toy')}" in err
    assert not (grid.run_dir("toy", "cf_e4srec", 0) / "run.json").exists()


def test_a_split_folder_edited_after_it_was_written(tmp_path, capsys):
    config = prepared(tmp_path, capsys)
    inter = split_dir(tmp_path) / "interactions.parquet"
    df = pd.read_parquet(inter)
    df.iloc[:-1].to_parquet(inter, index=False)  # one interaction removed by hand
    assert (
        main(["train", "--config", config, "--dataset", "toy", "--model", "mostpop", "--seed", "0"])
        == 2
    )
    err = capsys.readouterr().err
    assert (
        f"{inter}: checksum differs from split.json; the split was modified after it was written"
        in err
    )
    assert not (
        tmp_path / "results" / "t" / "runs" / "toy" / "mostpop" / "seed0" / "run.json"
    ).exists()


def test_an_mlflow_uri_that_cannot_be_reached(tmp_path, capsys, monkeypatch):
    config = grid_file(tmp_path, dataset={"source": "ml-100k"})
    assert main(["prepare", "--config", config, "--dataset", "toy"]) == 0
    assert (
        main(["train", "--config", config, "--dataset", "toy", "--model", "mostpop", "--seed", "0"])
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--config",
                config,
                "--dataset",
                "toy",
                "--model",
                "mostpop",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://user:s3cret@127.0.0.1:{port}")
    capsys.readouterr()
    assert (
        main(["track", "--config", config, "--dataset", "toy", "--model", "mostpop", "--seed", "0"])
        == 2
    )
    err = capsys.readouterr().err
    assert (
        f"MLflow tracking server http://user:***@127.0.0.1:{port} cannot be reached" in err
        and "s3cret" not in err
    )
    assert not (
        tmp_path / "results" / "t" / "runs" / "toy" / "mostpop" / "seed0" / "mlflow.json"
    ).exists()
