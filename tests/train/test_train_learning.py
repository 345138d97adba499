"""Learning test: a small CNN trained for a few steps on real photos beats chance on held-out photos.

Data: the shipped CC BY 4.0 vehicle-type photos (vehicle_cls/assets/demo_vehicle_types, see its
ATTRIBUTION.md): 36 per class for training (of which 10 % validation), 20 other photos per class
held out for the test. Six classes: chance is 16.7 %; the test requires at least 45 % top-1
(chance + 28 points), a margin an untrained or label-shuffled model does not reach.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.data import open_dataset
from vehicle_cls.train.config import TrainConfig
from vehicle_cls.train.evaluate import evaluate
from vehicle_cls.train.trainer import train

DEMO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]
CHANCE = 1 / 6
MARGIN = 0.28


class SmallNet(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()

        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(3, 16), nn.MaxPool2d(2), *block(16, 32), nn.MaxPool2d(2),
                                      *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Dropout(0.1), nn.Linear(64, num_classes))

    def forward(self, x):
        return self.fc(self.features(x))


def split_folders(root: Path, n_train: int = 36, n_test: int = 20) -> tuple[Path, Path]:
    for c in CLASSES:
        files = sorted((DEMO / c).glob("*.jpg"))
        assert len(files) >= n_train + n_test
        for sub, chosen in (("train", files[:n_train]), ("test", files[n_train:n_train + n_test])):
            (root / sub / c).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                shutil.copy(f, root / sub / c / f.name)
    return root / "train", root / "test"


def test_small_model_beats_chance_on_held_out_photos(tmp_path):
    train_dir, test_dir = split_folders(tmp_path)
    torch.manual_seed(0)
    clf = Classifier(SmallNet(6), "resnet18", CLASSES, Preprocess(input_size=32))
    cfg = TrainConfig.from_dict({
        "data": {"train": str(train_dir), "layout": "folders", "val_fraction": 0.1, "num_workers": 0},
        "optim": {"name": "adamw", "lr": 0.004, "weight_decay": 0.01, "warmup_epochs": 0.5},
        "augment": {"scale": [0.6, 1.0], "hflip": 0.5},
        "run": {"out_dir": str(tmp_path / "run"), "epochs": 12, "batch_size": 24, "precision": "fp32",
                "tensorboard": False, "progress": False, "threads": 2},
    }).validate()
    result = train(cfg, classifier=clf)
    assert result.epochs_completed == 12

    test = open_dataset(test_dir, "folders", split=None)
    train_paths = {Path(p).name for p in (train_dir / c for c in CLASSES) for p in p.iterdir()}
    assert not train_paths & {Path(s.path).name for s in test}  # held out: never trained on
    ev = evaluate(clf, test, dataset_classes=test.classes, name="held-out")
    assert ev.metrics.num_samples == 120
    print(f"learning test: held-out top-1 {ev.metrics.top1:.3f} (chance {CHANCE:.3f}, required {CHANCE + MARGIN:.3f})")
    assert ev.metrics.top1 >= CHANCE + MARGIN, f"top-1 {ev.metrics.top1:.3f} on held-out photos"
    # the training loss went down
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] - 0.2
    # and an untrained network of the same kind is near chance on the same photos
    torch.manual_seed(1)
    fresh = Classifier(SmallNet(6), "resnet18", CLASSES, Preprocess(input_size=32))
    assert evaluate(fresh, test, dataset_classes=test.classes).metrics.top1 < CHANCE + MARGIN
    assert np.isfinite(ev.probs).all()
