"""The Keras trainer (``model.backend: keras``): it learns on the shipped photos, resumes exactly after
an interruption inside an epoch, writes a bundle ``Pipeline.load`` opens, and the run's splits.json is
byte-identical to the torch trainer's for the same recipe.

A small Keras CNN (with a ``backbone`` sub-model and a Dense ``head``, like ``keras.applications`` +
head) is injected, as the torch tests inject a small net; the recipe path (``keras.applications``)
is covered by ``test_recipe_builds_keras_applications_model``. TensorFlow is slow on shared cores,
so the images are 32 px and the runs a few epochs.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vehicle_cls.train.config import ConfigError, TrainConfig

# find_spec, not importorskip: importing TensorFlow before torchvision would disable triton
pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs tensorflow")

DEMO = Path(__file__).resolve().parents[1] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]
CHANCE = 1 / 6
MARGIN = 0.28  # as tests/test_train_learning.py: at least 45 % top-1 on 120 held-out photos


def tiny_model(num_classes: int, size: int = 32, seed: int = 0):
    """Three conv blocks with BatchNorm (momentum 0.9 = torch's 0.1: a short run needs fresh statistics) (backbone) + Dropout + Dense logits (head); takes 0-255 pixels."""
    from vehicle_cls.classifier.keras_backend import import_keras

    keras = import_keras()
    keras.utils.set_random_seed(seed)
    L = keras.layers

    def block(filters):
        return [L.Conv2D(filters, 3, padding="same", use_bias=False), L.BatchNormalization(momentum=0.9), L.ReLU()]

    backbone = keras.Sequential([keras.Input((size, size, 3)), L.Rescaling(1 / 127.5, offset=-1), *block(16),
                                 L.MaxPooling2D(), *block(32), L.MaxPooling2D(), *block(64),
                                 L.GlobalAveragePooling2D()], name="backbone")
    inputs = keras.Input((size, size, 3))
    x = L.Dropout(0.1, seed=seed)(backbone(inputs))
    return keras.Model(inputs, L.Dense(num_classes, name="head")(x))


def split_folders(root: Path, classes=CLASSES, n_train: int = 36, n_test: int = 20) -> tuple[Path, Path]:
    for c in classes:
        files = sorted((DEMO / c).glob("*.jpg"))
        for sub, chosen in (("train", files[:n_train]), ("test", files[n_train:n_train + n_test])):
            (root / sub / c).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, root / sub / c / f.name)
    return root / "train", root / "test"


def recipe(data: Path, out: Path, **sections) -> TrainConfig:
    raw = {
        "data": {"train": str(data), "layout": "folders", "val_fraction": 0.1, "num_workers": 1},
        "model": {"backend": "keras", "input_size": 32, "dropout": 0.1},
        "optim": {"name": "adamw", "lr": 0.004, "weight_decay": 0.01, "warmup_epochs": 0.5, "label_smoothing": 0.1},
        "augment": {"scale": [0.6, 1.0], "hflip": 0.5, "rotation": 5, "color_jitter": 0.1},
        "run": {"out_dir": str(out), "epochs": 8, "batch_size": 24, "eval_batch_size": 64, "precision": "fp32",
                "tensorboard": False, "progress": False, "threads": 2},
    }
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    return TrainConfig.from_dict(raw).validate()


def test_keras_run_learns_and_its_bundle_serves(tmp_path):
    from vehicle_cls.classifier import Classifier
    from vehicle_cls.data import open_dataset
    from vehicle_cls.train.evaluate import evaluate
    from vehicle_cls.train.keras import train

    train_dir, test_dir = split_folders(tmp_path)
    result = train(recipe(train_dir, tmp_path / "run"), model=tiny_model(6), preprocess="none")
    assert result.epochs_completed == 8 and result.best_dir is not None
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] - 0.2
    run = tmp_path / "run"
    assert {"config.yaml", "splits.json", "history.json", "last.npz", "best"} <= {p.name for p in run.iterdir()}

    clf = Classifier.load(result.best_dir)
    assert clf.classes == CLASSES and clf.engine.name == "keras"
    test = open_dataset(test_dir, "folders", split=None)
    ev = evaluate(clf, test, dataset_classes=test.classes, name="held-out")
    print(f"keras learning test: held-out top-1 {ev.metrics.top1:.3f} (chance {CHANCE:.3f})")
    assert ev.metrics.num_samples == 120
    assert ev.metrics.top1 >= CHANCE + MARGIN, f"top-1 {ev.metrics.top1:.3f} on held-out photos"

    from vehicle_cls.pipeline import Pipeline

    pipe = Pipeline.load(result.best_dir, device="cpu", cropper=False)
    results = pipe([str(p) for p in sorted((test_dir / "car").glob("*.jpg"))[:4]])
    assert len(results) == 4 and all(r.ok for r in results)

