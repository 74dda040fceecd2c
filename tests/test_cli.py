"""The `llm4rec` command: clear errors, exit code 2, nothing half-written."""

import argparse

import yaml

from llm4rec.cli import COMMANDS, build_parser, main


def grid_file(tmp_path, dataset: dict) -> str:
    cfg = {
        "name": "t",
        "results_dir": str(tmp_path / "results"),
        "seeds": [0],
        "datasets": {"toy": dataset},
        "models": [{"name": "mostpop"}],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_prepare_custom_atomic_dataset(tmp_path, capsys):
    rows = "".join(f"u{u}\ti{(u + j) % 7}\t{j}\n" for u in range(6) for j in range(5))
    (tmp_path / "toy.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n" + rows)
    config = grid_file(
        tmp_path,
        {
            "source": "atomic",
            "path": str(tmp_path),
            "atomic_name": "toy",
            "k_core": {"user": 3, "item": 1},
        },
    )
    assert main(["prepare", "--config", config, "--dataset", "toy"]) == 0
    split_dir = tmp_path / "results" / "t" / "data" / "toy"
    assert sorted(p.name for p in split_dir.iterdir()) == [
        "interactions.parquet",
        "items.parquet",
        "split.json",
    ]
    assert "'test_users': 6" in capsys.readouterr().out


def test_bad_dataset_fails_clearly_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "toy.inter").write_text(
        "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\tnoon\n"
    )
    config = grid_file(tmp_path, {"source": "atomic", "path": str(tmp_path), "atomic_name": "toy"})
    assert main(["prepare", "--config", config, "--dataset", "toy"]) == 2
    err = capsys.readouterr().err
    assert (
        "toy.inter: field 'timestamp' must be numeric (a finite number), got 'noon' on data line 1"
        in err
    )
    split_dir = tmp_path / "results" / "t" / "data" / "toy"
    assert not split_dir.exists() or not any(split_dir.iterdir())


def test_unknown_dataset_and_model_on_the_command_line(tmp_path, capsys):
    config = grid_file(tmp_path, {"source": "ml-100k"})
    assert main(["prepare", "--config", config, "--dataset", "ml-1m"]) == 2
    assert "dataset 'ml-1m' is not in datasets (known: toy)" in capsys.readouterr().err
    assert (
        main(["train", "--config", config, "--dataset", "toy", "--model", "bpr", "--seed", "0"])
        == 2
    )
    assert "model 'bpr' is not in models (known: mostpop)" in capsys.readouterr().err


def test_validate_reports_config_errors(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: t\nseeds: [0]\ndatasets: {d: {source: ml-100k}}\nmodels: [{name: sasrek}]\n"
    )
    assert main(["validate", "--config", str(path)]) == 2
    assert "bad.yaml: models[0].name 'sasrek' is not a known model" in capsys.readouterr().err


def test_every_subcommand_has_one_handler():
    (subcommands,) = [
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ]
    assert set(subcommands.choices) == set(COMMANDS)
