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
from vehicle_cls.cli import demo as demo_cli
from vehicle_cls.cli import eval as eval_cli
from vehicle_cls.cli import train as train_cli
from vehicle_cls.io.images import load_image

DEMO = Path(__file__).resolve().parents[1] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "minibus"]


def cli(*argv: str) -> int:
    """Our three subcommands through argparse, as `vehicle-cls` registers them."""
    parser = argparse.ArgumentParser(prog="vehicle-cls")
    sub = parser.add_subparsers()
    for module in (train_cli, eval_cli, demo_cli):
        module.register(sub)
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for c in CLASSES:  # 6 per class: test 2 (carved, held out), val 1, train 3 -> 9 train images
        (root / c).mkdir()
        for f in sorted((DEMO / c).glob("*.jpg"))[:6]:
            shutil.copy(f, root / c / f.name)
    return root


def recipe(tmp_path: Path, photos: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
data: {{train: {photos}, layout: folders, test_fraction: 0.34, val_fraction: 0.25, num_workers: 0}}
model: {{arch: resnet18, input_size: 32, dropout: 0.1}}
optim: {{name: sgd, lr: 0.01, warmup_epochs: 0}}
augment: {{scale: [0.5, 1.0]}}
run: {{epochs: 2, batch_size: 3, precision: bf16, tensorboard: true, threads: 1, out_dir: {tmp_path / 'run'}}}
""")
    return path


def test_train_interrupt_resume_eval_predict(tmp_path, photos, capsys):
    cfg = recipe(tmp_path, photos)
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


def test_bad_recipe_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: x}\noptim: {lr: fast}\n")
    assert cli("train", "--config", str(bad)) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"vehicle-cls train: error: {bad}: optim.lr: expected a number, got 'fast'"
