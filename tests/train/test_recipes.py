"""Shipped recipes: found by name from any folder, listed by `vehicle-cls recipes`, data never relative to the repo."""
from __future__ import annotations

from pathlib import Path

import pytest

from vehicle_cls.cli import EXIT_ERROR, EXIT_OK, main
from vehicle_cls.recipes import find_recipe, list_recipes, recipes_dir, resolve_data_path
from vehicle_cls.train.config import ConfigError, load_config
from vehicle_cls.train.demo import demo_data_dir

SHIPPED = {"demo_vehicle_types", "stanford_cars_r50_224", "stanford_cars_r50_448"}


def test_recipes_live_in_the_package():
    assert set(list_recipes()) == SHIPPED
    assert recipes_dir().parent == Path(__import__("vehicle_cls").__file__).parent
    assert all(about for about in list_recipes().values())  # each says what it is for


def test_found_by_name_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in SHIPPED:
        assert find_recipe(name) == recipes_dir() / f"{name}.yaml"
        assert find_recipe(f"{name}.yaml") == recipes_dir() / f"{name}.yaml"
    cfg = load_config("stanford_cars_r50_448", ["data.train=/data/car_data"])
    assert cfg.model.input_size == 448 and cfg.data.train == "/data/car_data"


def test_a_file_in_the_working_directory_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo_vehicle_types.yaml").write_text("data:\n  train: /mine\n")
    assert load_config("demo_vehicle_types.yaml").data.train == "/mine"


def test_demo_recipe_data_resolves_to_the_packaged_photos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = (recipes_dir() / "demo_vehicle_types.yaml").read_text()
    assert "train: package:assets/demo_vehicle_types" in text
    cfg = load_config("demo_vehicle_types")
    assert cfg.data.train == str(demo_data_dir()) and Path(cfg.data.train).is_absolute()
    assert len(list(Path(cfg.data.train).glob("car/*.jpg"))) > 100


def test_package_prefix_only():
    assert resolve_data_path("data/x") == "data/x" and resolve_data_path(None) is None
    assert resolve_data_path("s3://b/p") == "s3://b/p"
    assert resolve_data_path("package:assets/demo_vehicle_types") == str(demo_data_dir())


def test_unknown_name_lists_the_shipped_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("stanford_cars_r50_999")
    msg = str(info.value)
    assert "not a shipped recipe name" in msg and "stanford_cars_r50_448" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="cannot read recipe"):  # a path stays a path
        load_config(tmp_path / "missing.yaml")


def test_cli_lists_and_prints(capsys):
    assert main(["recipes"]) == EXIT_OK
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == sorted(SHIPPED)
    assert main(["recipes", "stanford_cars_r50_224"]) == EXIT_OK
    assert capsys.readouterr().out == (recipes_dir() / "stanford_cars_r50_224.yaml").read_text()
    assert main(["recipes", "nope"]) == EXIT_ERROR
    assert "not a shipped recipe name" in capsys.readouterr().err


def test_train_by_name_from_another_folder(tmp_path, monkeypatch):
    """`vehicle-cls train --config demo_vehicle_types` in an empty folder: the packaged photos, one step."""
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--config", "demo_vehicle_types", "--no-progress", "--out", "run",
               "data.max_per_class=4", "run.epochs=1", "run.max_steps=1", "run.batch_size=4",
               "run.threads=1", "model.input_size=32"])
    assert rc == EXIT_OK
    assert (tmp_path / "run" / "splits.json").is_file()
