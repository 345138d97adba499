"""A loss that turns NaN/inf during training: a transient one is skipped (no update, BatchNorm statistics
kept), a persistent one stops the run with one line naming the step and the last good checkpoint, and
no checkpoint on disk ever holds non-finite weights."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.cli import main
from vehicle_cls.train import ConfigError, TrainConfig, train

CLASSES = ["bike", "car"]


class PoisonableNet(nn.Module):
    """A tiny CNN with BatchNorm whose input turns to NaN while ``poison`` is set (a corrupt batch)."""

    def __init__(self):
        super().__init__()
        self.poison = False
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.fc = nn.Sequential(nn.Dropout(0.0), nn.Linear(4, 2))

    def forward(self, x):
        if self.poison:
            x = x * float("nan")
        return self.fc(self.features(x))


@pytest.fixture
def data_folder(photo_folder):
    """``data_folder(root, per_class=4)``: demo photos of CLASSES in class folders."""
    return lambda root, per_class=4: photo_folder(root, per_class, CLASSES)


def _raw(data: Path, out: Path, **run) -> dict:
    return {"data": {"train": str(data), "val_fraction": 0.25, "num_workers": 0},
            "model": {"arch": "resnet18", "input_size": 32},
            "optim": {"lr": 0.05, "warmup_epochs": 0, "weight_decay": 1e-3},
            "augment": {"enabled": False},
            "run": {"out_dir": str(out), "epochs": 2, "batch_size": 2, "precision": "fp32", "tensorboard": False,
                    "progress": False, "threads": 1, "channels_last": False, **run}}


def _cfg(data: Path, out: Path, **run) -> TrainConfig:
    return TrainConfig.from_dict(_raw(data, out, **run)).validate()


def _net() -> tuple[Classifier, PoisonableNet]:
    torch.manual_seed(0)
    net = PoisonableNet()
    return Classifier(net, "resnet18", CLASSES, Preprocess(input_size=12)), net


def _all_finite(state) -> list[str]:
    """Names of the non-finite float tensors anywhere in a (nested) checkpoint."""
    bad = []

    def walk(value, name):
        if torch.is_tensor(value):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad.append(name)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{name}.{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{name}[{i}]")

    walk(state, "last.pt")
    return bad


def test_single_nan_batch_is_skipped_and_training_continues(tmp_path, caplog, data_folder):
    data = data_folder(tmp_path / "d")
    clf, net = _net()

    def poison(epoch, step, idx):
        net.poison = (epoch, step) == (0, 1)

    with caplog.at_level(logging.WARNING, logger="vehicle_cls.train"):
        result = train(_cfg(data, tmp_path / "run", tensorboard=True), classifier=clf, on_batch=poison)
    assert result.epochs_completed == 2
    assert [row["train_nonfinite"] for row in result.history] == [1, 0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(tmp_path / "run" / "tb"))
    tb.Reload()
    assert [(e.step, e.value) for e in tb.Scalars("train/nonfinite_steps")] == [(1, 1.0)]
    assert [(e.step, e.value) for e in tb.Scalars("epoch/train_nonfinite")] == [(1, 1.0), (2, 0.0)]
    skipped = [r.getMessage() for r in caplog.records if "skipped this step's update" in r.getMessage()]
    assert skipped == ["epoch 1 step 1: loss nan; skipped this step's update (1 in a row, the run stops at 5)"]
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert _all_finite(state) == []  # BatchNorm running statistics too: the NaN forward pass was undone
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.history)


def test_skipped_step_changes_no_weight_statistic_or_optimizer_state(tmp_path, caplog, data_folder):
    from vehicle_cls.train import Trainer

    data = data_folder(tmp_path / "d")
    clf, net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.poison = True  # the epoch's only step (6 training images, batch 6) is NaN
    trainer = Trainer(_cfg(data, tmp_path / "run", epochs=1, batch_size=6), classifier=clf)
    with caplog.at_level(logging.WARNING, logger="vehicle_cls.train"):
        result = trainer.fit()
    assert result.history[0]["train_nonfinite"] == 1
    for k, v in before.items():  # no SGD step, no weight decay, no BatchNorm update
        assert torch.equal(net.state_dict()[k], v), k
    assert trainer.optimizer.state == {}  # no momentum buffer was created
    # an epoch that ends in a non-finite streak is not a good checkpoint: nothing written
    assert not (tmp_path / "run" / "last.pt").exists() and result.best_dir is None
    assert any(r.getMessage() == "epoch 1: not saved, its last 1 step(s) had a non-finite loss; "
               "last good checkpoint: none written yet" for r in caplog.records)


def test_persistent_nan_stops_with_one_line_and_keeps_the_last_finite_checkpoint(tmp_path, data_folder):
    data = data_folder(tmp_path / "d")
    clf, net = _net()
    run = tmp_path / "run"

    def poison(epoch, step, idx):
        net.poison = epoch >= 1  # epoch 1 trains; from epoch 2 on every batch is NaN

    with pytest.raises(RuntimeError) as info:
        train(_cfg(data, run, epochs=4, max_nonfinite_steps=2), classifier=clf, on_batch=poison)
    message = str(info.value)
    assert type(info.value).__name__ == "NonFiniteLossError"
    assert "\n" not in message
    # 3 steps per epoch: epoch 2 starts at step 3; the 2nd NaN step in a row (step 4) stops the run
    assert message.startswith("epoch 2 step 4: the training loss was nan for 2 step(s) in a row "
                              "(run.max_nonfinite_steps=2)")
    assert message.endswith(f"last good checkpoint: {run / 'last.pt'} (epoch 1)")
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 1 and _all_finite(state) == []
    assert len(json.loads((run / "history.json").read_text())) == 1
    from safetensors.torch import load_file

    best = load_file(run / "best" / "model.safetensors")
    assert best and all(bool(torch.isfinite(t).all()) for t in best.values() if t.is_floating_point())


class NanInEvalNet(PoisonableNet):
    """Trains normally but answers NaN in eval mode (a model broken only at validation)."""

    def forward(self, x):
        out = super().forward(x)
        return out if self.training else out * float("nan")


def test_epoch_with_a_nan_validation_loss_is_not_saved(tmp_path, caplog, data_folder):
    data = data_folder(tmp_path / "d")
    torch.manual_seed(0)
    clf = Classifier(NanInEvalNet(), "resnet18", CLASSES, Preprocess(input_size=12))
    with caplog.at_level(logging.WARNING, logger="vehicle_cls.train"):
        result = train(_cfg(data, tmp_path / "run", epochs=1, tensorboard=False), classifier=clf)
    assert result.epochs_completed == 1 and result.best_dir is None
    assert not (tmp_path / "run" / "last.pt").exists()
    assert any(r.getMessage() == "epoch 1: not saved, the validation loss is nan; "
               "last good checkpoint: none written yet" for r in caplog.records)


class NanInFirstEvalNet(PoisonableNet):
    """Answers NaN in its first validation pass only (epoch 1), normally once training resumes."""

    poisoned, evaluated = True, False

    def train(self, mode: bool = True):
        if mode and self.evaluated:
            self.poisoned = False
        return super().train(mode)

    def forward(self, x):
        out = super().forward(x)
        if self.training or not self.poisoned:
            return out
        self.evaluated = True
        return out * float("nan")


def test_history_files_stay_strict_json_after_a_nan_epoch(tmp_path, data_folder):
    """Epoch 1's NaN validation loss reaches history.json and the bundle's summary as null, not NaN."""
    data = data_folder(tmp_path / "d")
    torch.manual_seed(0)
    clf = Classifier(NanInFirstEvalNet(), "resnet18", CLASSES, Preprocess(input_size=12))
    result = train(_cfg(data, tmp_path / "run", epochs=2, tensorboard=False), classifier=clf)
    assert result.epochs_completed == 2 and result.best_dir is not None

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))

    history = strict((tmp_path / "run" / "history.json").read_text())
    assert history[0]["val_loss"] is None and isinstance(history[1]["val_loss"], float)
    config = strict((result.best_dir / "config.json").read_text())
    assert config["training"]["history"][0]["val_loss"] is None


def test_learning_rate_1e30_stops_and_leaves_the_earlier_checkpoint_alone(tmp_path, capsys, data_folder):
    data = data_folder(tmp_path / "d")
    run = tmp_path / "run"
    recipe = tmp_path / "r.yaml"
    import yaml

    recipe.write_text(yaml.safe_dump(_raw(data, run, epochs=1)))
    assert main(["train", "--config", str(recipe)]) == 0  # a good run: last.pt and best/
    capsys.readouterr()
    good_last = (run / "last.pt").read_bytes()
    good_best = (run / "best" / "model.safetensors").read_bytes()

    assert main(["train", "--config", str(recipe), "optim.lr=1.0e+30", "run.epochs=3"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert re.match(r"vehicle-cls train: error: epoch \d+ step \d+: the training loss was (nan|-?inf) for 5 step\(s\) "
                    r"in a row \(run.max_nonfinite_steps=5\); stopped, these weights not saved; ", err[0]), err[0]
    assert err[0].endswith(f"last good checkpoint: none written by this run ({run / 'last.pt'}, "
                           "from an earlier run, left as it was)")
    assert (run / "last.pt").read_bytes() == good_last  # never overwritten with the diverged weights
    assert (run / "best" / "model.safetensors").read_bytes() == good_best
    assert _all_finite(torch.load(run / "last.pt", weights_only=True)) == []


def test_max_nonfinite_steps_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="run.max_nonfinite_steps: must be >= 1, got 0"):
        _cfg(tmp_path, tmp_path / "run", max_nonfinite_steps=0)


def test_max_nonfinite_steps_default_and_override(tmp_path):
    from vehicle_cls.train.config import load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {train: x}\n")
    assert load_config(recipe).run.max_nonfinite_steps == 5
    assert load_config(recipe, ["run.max_nonfinite_steps=1"]).run.max_nonfinite_steps == 1


DDP_WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    from torch import nn
    from vehicle_cls.classifier import Classifier, Preprocess
    from vehicle_cls.train.config import TrainConfig
    from vehicle_cls.train.trainer import train

    data, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    rank = int(os.environ.get("RANK", "0"))

    class PoisonableNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.poison = False
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Sequential(nn.Dropout(0.0), nn.Linear(4, 2))
        def forward(self, x):
            if self.poison:
                x = x * float("nan")
            return self.fc(self.features(x))

    torch.manual_seed(0)
    net = PoisonableNet()
    clf = Classifier(net, "resnet18", ["bike", "car"], Preprocess(input_size=12))
    cfg = TrainConfig.from_dict({
        "data": {"train": data, "val_fraction": 0.25, "num_workers": 0},
        "optim": {"lr": 0.05, "warmup_epochs": 0},
        "augment": {"enabled": False},
        "run": {"out_dir": out, "epochs": 2, "batch_size": 4, "precision": "fp32", "tensorboard": False,
                "progress": False, "threads": 1, "channels_last": False, "max_nonfinite_steps": 2},
    }).validate()

    def poison(epoch, step, idx):  # only rank 1 sees NaN: rank 0 must skip the same steps, or DDP hangs
        if rank == 1:
            net.poison = (epoch, step) == (0, 1) if mode == "transient" else epoch >= 1

    report = {"rank": rank}
    try:
        result = train(cfg, classifier=clf, on_batch=poison)
        report["nonfinite"] = [row["train_nonfinite"] for row in result.history]
        report["weights"] = {k: v.tolist() for k, v in net.named_parameters()}  # BatchNorm statistics are per rank
    except RuntimeError as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump(report, f)
''')


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["transient", "persistent"])
def test_ddp_ranks_agree_on_a_nan_loss_of_one_rank(tmp_path, mode, data_folder):
    """A NaN loss on rank 1 only: both ranks skip that step (no hang) and, when it persists, both stop."""
    data = data_folder(tmp_path / "d", per_class=5)  # 8 train images, global batch 4: 2 steps per epoch, 2 images per rank
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(data), str(out), mode],
                          env=env, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in (0, 1))
    if mode == "transient":
        assert r0["nonfinite"] == r1["nonfinite"] == [1, 0]
        assert r0["weights"] == r1["weights"]  # both ranks skipped the same update
        assert _all_finite(torch.load(out / "last.pt", weights_only=True)) == []
    else:  # epoch 2 = steps 2, 3: the second NaN step in a row stops both ranks
        assert r1["error"].startswith("NonFiniteLossError: epoch 2 step 3: the training loss was nan for 2 step(s)")
        assert r0["error"].startswith("NonFiniteLossError: epoch 2 step 3: the training loss was not finite on "
                                      "another rank for 2 step(s)")
        for r in (r0, r1):
            assert r["error"].endswith(f"last good checkpoint: {out / 'last.pt'} (epoch 1)")
        state = torch.load(out / "last.pt", weights_only=True)
        assert state["epoch"] == 1 and _all_finite(state) == []
