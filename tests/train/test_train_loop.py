"""Loop pieces: lr schedule, no weight decay on norm/bias, frozen-backbone warmup, early stopping."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.runtime import resolve_precision
from vehicle_cls.train.checkpoint import LAST_NAME
from vehicle_cls.train.config import TrainConfig
from vehicle_cls.train.optim import lr_factor, param_groups
from vehicle_cls.train.trainer import train

DEMO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"
CLASSES = ["bike", "car"]


class TinyNet(nn.Module):
    def __init__(self, norm: bool = True):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4) if norm else nn.Identity(), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Dropout(0.0), nn.Linear(4, 2))

    def forward(self, x):
        return self.fc(self.features(x))


def test_lr_factor_warmup_then_cosine():
    # 10 steps, 2 warmup from 0.1: 0.1, 0.55, then cosine over 8 steps to 0
    assert lr_factor(0, 10, 2, 0.1, "cosine", 0.0) == pytest.approx(0.1)
    assert lr_factor(1, 10, 2, 0.1, "cosine", 0.0) == pytest.approx(0.55)
    assert lr_factor(2, 10, 2, 0.1, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_factor(6, 10, 2, 0.1, "cosine", 0.0) == pytest.approx(0.5)
    assert lr_factor(10, 10, 2, 0.1, "cosine", 0.0) == pytest.approx(0.0)
    assert lr_factor(6, 10, 2, 0.1, "cosine", 0.2) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor(4, 10, 0, 0.1, "cosine", 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.4)))
    assert lr_factor(7, 10, 2, 0.1, "constant", 0.0) == 1.0


def test_no_weight_decay_on_norm_and_bias():
    model = TinyNet()
    groups = {g["name"]: g for g in param_groups(model, model.fc, 0.1, 1e-4, 0.5)}
    names = {id(p): n for n, p in model.named_parameters()}
    got = {k: sorted(names[id(p)] for p in g["params"]) for k, g in groups.items()}
    assert got == {
        "backbone": ["features.0.weight"],
        "backbone_no_decay": ["features.0.bias", "features.1.bias", "features.1.weight"],
        "head": ["fc.1.weight"],
        "head_no_decay": ["fc.1.bias"],
    }
    assert groups["backbone"]["weight_decay"] == 1e-4 and groups["head_no_decay"]["weight_decay"] == 0.0
    assert groups["backbone"]["lr"] == pytest.approx(0.05) and groups["head"]["lr"] == pytest.approx(0.1)


def test_precision_resolution():
    assert resolve_precision("auto", torch.device("cpu"), training=True) == "bf16"  # training: bf16 on any CPU
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        resolve_precision("fp16", torch.device("cpu"))


def _data(tmp_path: Path) -> Path:
    for c in CLASSES:
        (tmp_path / "d" / c).mkdir(parents=True)
        for f in sorted((DEMO / c).glob("*.jpg"))[:4]:
            shutil.copy(f, tmp_path / "d" / c / f.name)
    return tmp_path / "d"


def _cfg(tmp_path: Path, name: str, **kw) -> TrainConfig:
    raw = {"data": {"train": str(_data(tmp_path) if not (tmp_path / "d").exists() else tmp_path / "d"),
                    "val_fraction": 0.25, "num_workers": 0},
           "model": {}, "optim": {"lr": 0.1, "warmup_epochs": 0},
           "augment": {"enabled": False},
           "run": {"out_dir": str(tmp_path / name), "epochs": 2, "batch_size": 3, "precision": "fp32",
                   "tensorboard": False, "progress": False, "threads": 1, "channels_last": False}}
    for key, value in kw.items():
        section, field = key.split("__")
        raw[section][field] = value
    return TrainConfig.from_dict(raw).validate()


def test_frozen_backbone_first_epoch(tmp_path):
    torch.manual_seed(0)
    clf = Classifier(TinyNet(), "resnet18", CLASSES, Preprocess(input_size=12))
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    train(_cfg(tmp_path, "frozen", run__epochs=1, run__freeze_backbone_epochs=1), classifier=clf)
    after = torch.load(tmp_path / "frozen" / LAST_NAME, weights_only=True)["model"]
    for k, v in before.items():
        if k.startswith("features."):
            assert torch.equal(v, after[k]), k  # weights and BatchNorm statistics kept
    assert not torch.equal(before["fc.1.weight"], after["fc.1.weight"])
    # a second run with the freeze over: the backbone trains
    torch.manual_seed(0)
    clf2 = Classifier(TinyNet(), "resnet18", CLASSES, Preprocess(input_size=12))
    train(_cfg(tmp_path, "free", run__epochs=1), classifier=clf2)
    after2 = torch.load(tmp_path / "free" / LAST_NAME, weights_only=True)["model"]
    assert not torch.equal(before["features.0.weight"], after2["features.0.weight"])


def test_early_stopping_when_validation_stops_improving(tmp_path):
    torch.manual_seed(0)
    clf = Classifier(TinyNet(norm=False), "resnet18", CLASSES, Preprocess(input_size=12))
    # no BatchNorm (its running statistics would move) and an lr so small that the validation loss cannot improve in float32 -> patience 1 stops after epoch 2
    cfg = _cfg(tmp_path, "es", optim__lr=1e-30, run__epochs=5, run__early_stopping_patience=1, run__monitor="val_loss")
    result = train(cfg, classifier=clf)
    assert result.stopped_early and result.epochs_completed == 2 and result.best_epoch == 1


def test_from_scratch_batchnorm_updates_at_torch_default_momentum(tmp_path):
    """torchvision's MobileNetV3 keeps BatchNorm momentum 0.01 (a 5-epoch run on the shipped photos validated
    at chance); a from-scratch recipe trains it at 0.1 like every other arch and the Keras trainer."""
    import torchvision

    from vehicle_cls.train import trainer
    from vehicle_cls.train.distributed import shutdown

    stock = {m.momentum for m in torchvision.models.mobilenet_v3_small().modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert stock == {0.01}  # what the trainer must change
    t = trainer.Trainer(_cfg(tmp_path, "mnv3", model__arch="mobilenet_v3_small", model__input_size=32))
    try:
        t._setup(resume=False)
    finally:
        shutdown(getattr(t, "dist", None))
    trained = {m.momentum for m in t.model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert trained == {0.1}
