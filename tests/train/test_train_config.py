"""Recipes: YAML loading, validation errors as one line naming file and key, dotted overrides."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vehicle_cls.recipes import recipes_dir
from vehicle_cls.train.config import ConfigError, TrainConfig, apply_override, load_config

CONFIGS = recipes_dir()

GOOD = """
data:
  train: /data/car_data
  val_fraction: 0.2
model:
  arch: resnet50
  input_size: 448
optim:
  name: adamw
  lr: 1e-3          # YAML 1.1 reads this as a string; float fields accept numeric strings
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def one_line_error(path: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_recipe_and_defaults(tmp_path):
    path = write(tmp_path, GOOD.replace("1e-3", "0.001"))
    cfg = load_config(path)
    assert cfg.data.train == "/data/car_data" and cfg.data.val_fraction == 0.2
    assert cfg.model.input_size == 448 and cfg.optim.name == "adamw" and cfg.optim.lr == 0.001
    assert cfg.run.epochs == 30 and cfg.augment.scale == (0.08, 1.0)  # defaults
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # round trip through plain values


def test_string_where_a_number_is_expected(tmp_path):
    assert load_config(write(tmp_path, GOOD)).optim.lr == 0.001  # YAML 1.1 reads 1e-3 as a string: a number
    msg = one_line_error(write(tmp_path, GOOD.replace("1e-3", "fast")))
    assert msg == f"{tmp_path / 'recipe.yaml'}: optim.lr: expected a number, got 'fast'"


def test_unknown_key_names_file_and_key(tmp_path):
    msg = one_line_error(write(tmp_path, "data:\n  train: x\noptim:\n  learning_rate: 0.1\n"))
    assert msg.startswith(f"{tmp_path / 'recipe.yaml'}: unknown key optim.learning_rate; known: ")
    msg = one_line_error(write(tmp_path, "data:\n  train: x\noptimizer:\n  lr: 0.1\n"))
    assert "unknown key optimizer" in msg


@pytest.mark.parametrize("text, key, fragment", [
    ("data: {train: x}\noptim: {name: adam}\n", "optim.name", "must be one of 'sgd', 'adamw', got 'adam'"),
    ("data: {train: x}\nrun: {epochs: 0}\n", "run.epochs", "must be >= 1, got 0"),
    ("data: {train: x}\nrun: {epochs: 2.5}\n", "run.epochs", "expected an integer, got 2.5"),
    ("data: {train: x}\naugment: {scale: [0.5]}\n", "augment.scale", "expected a list of 2 numbers"),
    ("data: {train: x}\nmodel: {dropout: 1.5}\n", "model.dropout", "must be in [0, 1), got 1.5"),
    ("data: {train: x}\nrun: {tensorboard: 'yes please'}\n", "run.tensorboard", "expected true/false"),
    ("model: {arch: resnet18}\n", "data.train", "is required"),
    ("data: [1, 2]\n", "data", "expected a mapping"),
])
def test_bad_values(tmp_path, text, key, fragment):
    msg = one_line_error(write(tmp_path, text))
    assert msg.startswith(f"{tmp_path / 'recipe.yaml'}: {key}: ") and fragment in msg


def test_malformed_yaml_names_file_and_line(tmp_path):
    msg = one_line_error(write(tmp_path, "data:\n  train: x\n optim: [\n"))
    assert msg.startswith(f"{tmp_path / 'recipe.yaml'}: line ") and "malformed YAML" in msg
    msg = one_line_error(write(tmp_path, "- just\n- a list\n"))
    assert "top level must be a mapping" in msg
    msg = one_line_error(tmp_path / "missing.yaml")
    assert msg.startswith(f"{tmp_path / 'missing.yaml'}: cannot read recipe")


def test_overrides(tmp_path):
    path = write(tmp_path, "data: {train: x}\noptim: {lr: 0.1}\n")
    cfg = load_config(path, ["optim.lr=0.01", "run.epochs=3", "augment.scale=[0.3, 1]", "model.weights=null",
                             "data.train=s3://bucket/cars"])
    assert cfg.optim.lr == 0.01 and cfg.run.epochs == 3 and cfg.augment.scale == (0.3, 1.0)
    assert cfg.model.weights is None and cfg.data.train == "s3://bucket/cars"
    assert "unknown key optim.lrr" in one_line_error(path, ["optim.lrr=1"])
    assert one_line_error(path, ["run.epochs=many"]).endswith("run.epochs: expected an integer, got 'many'")
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_override({}, "optim.lr")
    with pytest.raises(ConfigError, match="key must be section.key"):
        apply_override({}, "lr=0.1")


@pytest.mark.parametrize("name", ["stanford_cars_r50_448.yaml", "stanford_cars_r50_224.yaml", "demo_vehicle_types.yaml"])
def test_shipped_recipes_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.data.train


def test_demo_yaml_is_the_demo_recipe():
    from vehicle_cls.train.demo import DEMO_RECIPE

    from vehicle_cls.train.demo import demo_data_dir

    raw = yaml.safe_load((CONFIGS / "demo_vehicle_types.yaml").read_text())
    raw["run"].pop("out_dir", None)
    recipe = {section: dict(values) for section, values in DEMO_RECIPE.items()}
    raw["data"].pop("train"), recipe["data"].pop("train")  # the YAML's is package:..., resolved below
    assert TrainConfig.from_dict(raw) == TrainConfig.from_dict(recipe)
    assert load_config("demo_vehicle_types").data.train == str(demo_data_dir())


def test_448_recipe_says_it_was_not_measured_here():
    text = (CONFIGS / "stanford_cars_r50_448.yaml").read_text()
    assert "NOT measured" in text and "448" in text
