"""Fixtures shared by the training tests: a tiny CNN, demo photos copied into class folders, a CLI recipe."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from torch import nn

DEMO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "minibus"]


class TinyNet(nn.Module):
    """A few-thousand-parameter CNN with the ResNet head layout (``fc`` = Dropout + Linear)."""

    def __init__(self, num_classes: int, norm: bool = True):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8) if norm else nn.Identity(), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, num_classes))

    def forward(self, x):
        return self.fc(self.features(x))


def _photo_folder(root: Path, per_class: int = 6, classes: list[str] = CLASSES) -> Path:
    """``root`` filled with ``per_class`` demo photos of each class, one folder per class."""
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for f in sorted((DEMO / c).glob("*.jpg"))[:per_class]:
            shutil.copy(f, root / c / f.name)
    return root


@pytest.fixture
def tiny_net() -> type[TinyNet]:
    """The TinyNet class (tests build it with their own class count)."""
    return TinyNet


@pytest.fixture
def photo_folder() -> Callable[..., Path]:
    """``photo_folder(root, per_class=6, classes=CLASSES)``: demo photos copied into class folders."""
    return _photo_folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """6 demo photos per class: test 2 (carved, held out), val 1, train 3 with the CLI recipe's fractions."""
    return _photo_folder(tmp_path_factory.mktemp("photos"), 6)


@pytest.fixture
def cli_recipe(tmp_path: Path, photos: Path) -> Path:
    """A small YAML recipe on ``photos`` (2 epochs of a ResNet-18 at 32 px) for the train/eval CLI tests."""
    path = tmp_path / "recipe.yaml"
    path.write_text(f"""
data: {{train: {photos}, layout: folders, test_fraction: 0.34, val_fraction: 0.25, num_workers: 0}}
model: {{arch: resnet18, input_size: 32, dropout: 0.1}}
optim: {{name: sgd, lr: 0.01, warmup_epochs: 0}}
augment: {{scale: [0.5, 1.0]}}
run: {{epochs: 2, batch_size: 3, precision: bf16, tensorboard: true, threads: 1, out_dir: {tmp_path / 'run'}}}
""")
    return path
