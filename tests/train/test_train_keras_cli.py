"""Command line with ``model.backend=keras``: train a keras.applications model from a YAML recipe, then
``vehicle-cls eval --compare`` it with a torch run of the same recipe on the same test split."""
from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")


def test_keras_and_torch_runs_compared_side_by_side(tmp_path, cli, cli_recipe, capsys):
    cfg = cli_recipe
    torch_run, keras_run = tmp_path / "torch_run", tmp_path / "keras_run"
    assert cli("train", "--config", str(cfg), "--out", str(torch_run), "run.epochs=1", "--no-progress") == 0
    assert cli("train", "--config", str(cfg), "--out", str(keras_run), "model.backend=keras",
               "model.arch=mobilenet_v3_small", "run.epochs=1", "run.precision=fp32", "--no-progress") == 0
    out = capsys.readouterr().out
    assert f"bundle {keras_run / 'best'}" in out
    assert (keras_run / "splits.json").read_bytes() == (torch_run / "splits.json").read_bytes()
    config = json.loads((keras_run / "best" / "config.json").read_text())
    assert config["backend"] == "keras" and config["keras"]["preprocess"] == "none"
    assert config["training"]["recipe"]["model"]["backend"] == "keras"
    assert list((keras_run / "tb").iterdir())  # TensorBoard events

    assert cli("eval", "--compare", str(torch_run), str(keras_run), "--out", str(tmp_path / "cmp")) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "torch_run (torch)" in table and "keras_run (keras)" in table
    rows = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert [r["num_samples"] for r in rows] == [6, 6]  # the same carved test split (2 per class)

    assert cli("train", "--config", str(cfg), "model.backend=keras", "model.arch=vit_b_16") == 1
    assert f"{cfg}: model.arch: 'vit_b_16' has no keras.applications counterpart" in capsys.readouterr().err
