"""Command line: train, interrupt, --resume, eval (own test split, --crop gt, --compare); the bundle predicts via Pipeline."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vehicle_cls.classifier import Classifier
from vehicle_cls.io.images import load_image

DEMO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "minibus"]


def test_train_interrupt_resume_eval_predict(tmp_path, photos, capsys, cli, cli_recipe):
    cfg = cli_recipe
    run = tmp_path / "run"
    assert cli("train", "--config", str(cfg), "run.max_steps=3", "--no-progress") == 0  # 1 epoch = 3 steps
    out = capsys.readouterr().out
    assert "interrupted" in out and "--resume" in out
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    assert cli("train", "--config", str(cfg), "--resume", "--no-progress") == 0
    assert "done: 2 epochs, 6 steps" in capsys.readouterr().out
    assert list((run / "tb").iterdir())  # TensorBoard event files
    splits = json.loads((run / "splits.json").read_text())
    test_names = {Path(p).name for p, _, _ in splits["test"]}
    assert len(test_names) == 6 and not test_names & {Path(p).name for p, _, _ in splits["train"] + splits["val"]}

    # eval on the run's own held-out test split
    assert cli("eval", "--model", str(run / "best"), "--split", "test", "--out", str(tmp_path / "full"),
               "--workers", "0", "--name", "full image") == 0
    report = json.loads((tmp_path / "full" / "report.json").read_text())
    assert report["num_samples"] == 6
    # independent check: the bundle's own predict_proba on decoded images gives the same top-1
    clf = Classifier.load(run / "best")
    probs = clf.predict_proba_images([load_image(p) for p, _, _ in splits["test"]])
    labels = np.array([y for _, y, _ in splits["test"]])
    assert report["top1"] == pytest.approx(float((probs.argmax(1) == labels).mean()))
    assert (tmp_path / "full" / "training_curves.png").is_file()  # history comes with the bundle

    # a second run with --data and --crop gt (no boxes in class folders: whole images), then compare
    assert cli("eval", "--model", str(run / "best"), "--data", str(photos), "--layout", "folders",
               "--crop", "gt", "--out", str(tmp_path / "gt"), "--workers", "0", "--name", "gt crop") == 0
    assert json.loads((tmp_path / "gt" / "report.json").read_text())["num_samples"] == 18
    assert cli("eval", "--compare", str(tmp_path / "full"), str(tmp_path / "gt"), "--out", str(tmp_path / "cmp")) == 0
    assert "| | full image | gt crop |" in (tmp_path / "cmp" / "comparison.md").read_text()

    # the best checkpoint is a bundle the Pipeline accepts
    from vehicle_cls.pipeline import Pipeline

    pipe = Pipeline.load(run / "best")
    preds = pipe([p for p, _, _ in splits["test"]][:2] + [str(tmp_path / "missing.jpg")])
    assert [p.ok for p in preds] == [True, True, False]
    assert preds[0].best.label in CLASSES and preds[0].best.score == pytest.approx(float(probs[0].max()), abs=1e-5)


def test_bad_recipe_is_one_line(tmp_path, capsys, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: x}\noptim: {lr: fast}\n")
    assert cli("train", "--config", str(bad)) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"vehicle-cls train: error: {bad}: optim.lr: expected a number, got 'fast'"
