"""Exact resume: a run interrupted inside epoch 2 and resumed ends with the weights of an uninterrupted run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.train.checkpoint import LAST_NAME
from vehicle_cls.train.config import TrainConfig
from vehicle_cls.train.trainer import train

DEMO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car", "minibus"]


def tiny_classifier(net: type[nn.Module], seed: int = 0, norm: bool = True) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(net(len(CLASSES), norm), "resnet18", CLASSES, Preprocess(input_size=16))


def config(data: Path, out: Path, **run) -> TrainConfig:
    raw = {
        "data": {"train": str(data), "val_fraction": 0.34, "num_workers": 0},
        "optim": {"name": "sgd", "lr": 0.05, "warmup_epochs": 0.5, "label_smoothing": 0.1},
        "augment": {"scale": [0.5, 1.0], "rotation": 5, "color_jitter": 0.1},  # random: resume must replay it
        "run": {"out_dir": str(out), "epochs": 3, "batch_size": 4, "precision": "fp32", "tensorboard": False,
                "progress": False, "threads": 1, "channels_last": False, **run},
    }
    return TrainConfig.from_dict(raw).validate()


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / LAST_NAME, map_location="cpu", weights_only=True)["model"]


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, tiny_net, photo_folder):
    data = photo_folder(tmp_path / "photos")  # 6 per class -> 4 train (12 images, 3 steps/epoch), 2 val
    full = train(config(data, tmp_path / "full"), classifier=tiny_classifier(tiny_net))
    assert full.epochs_completed == 3 and full.global_step == 9 and not full.interrupted

    # stop inside epoch 2 (step 5 of 9): last.pt still holds epoch 1, epoch 2 is redone on resume
    part = train(config(data, tmp_path / "part", max_steps=5), classifier=tiny_classifier(tiny_net))
    assert part.interrupted and part.epochs_completed == 1 and part.global_step == 5
    ckpt = torch.load(tmp_path / "part" / LAST_NAME, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step"] == 3
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "best_metric", "history"} <= set(ckpt)
    assert not torch.equal(ckpt["model"]["fc.1.weight"], weights(tmp_path / "full")["fc.1.weight"])

    resumed = train(config(data, tmp_path / "part"), classifier=tiny_classifier(tiny_net, seed=123), resume=True)
    assert resumed.epochs_completed == 3 and resumed.global_step == 9
    a, b = weights(tmp_path / "full"), weights(tmp_path / "part")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], abs=0, rel=0)
    # the best bundle's config.json carries the classes and the training summary
    cfg = json.loads((resumed.best_dir / "config.json").read_text())
    assert cfg["classes"] == CLASSES and cfg["training"]["epoch"] == resumed.best_epoch
    assert (resumed.best_dir / "model.safetensors").is_file()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, tiny_net, photo_folder):
    data = photo_folder(tmp_path / "photos", per_class=3)
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume from"):
        train(config(data, tmp_path / "none"), classifier=tiny_classifier(tiny_net), resume=True)
