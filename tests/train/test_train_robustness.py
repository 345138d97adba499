"""Reliability of training (issue #9 items 2, 6, 7, 10): a crafted last.pt is refused without running
code, a last batch of one image trains, non-finite settings and duplicate keys are refused, and bad
recipes, CSVs, folders and run directories fail in one line naming the file (on stderr)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch
from dataset_files import CLASSES

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.cli import main
from vehicle_cls.train import ConfigError, TrainConfig, load_config, train

DEMO = Path(__file__).resolve().parents[2] / "vehicle_cls" / "assets" / "demo_vehicle_types"


def _cfg(data: Path, out: Path, **run) -> TrainConfig:
    raw = {"data": {"train": str(data), "val_fraction": 0.0, "num_workers": 0},
           "model": {"arch": "resnet18", "input_size": 32},
           "optim": {"lr": 0.01, "warmup_epochs": 0},
           "augment": {"enabled": False},
           "run": {"out_dir": str(out), "epochs": 1, "precision": "fp32", "tensorboard": False,
                   "progress": False, "threads": 1, "channels_last": False, **run}}
    return TrainConfig.from_dict(raw).validate()


# ---------------------------------------------------------------- item 2: last.pt never runs code
def test_crafted_last_pt_is_refused_and_never_executed(tmp_path, photo_folder):
    data = photo_folder(tmp_path / "d", 2, ["bike", "car"])
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil(), "epoch": 1}, run / "last.pt")
    with pytest.raises(ValueError) as info:
        train(_cfg(data, run, batch_size=2), resume=True)
    message = str(info.value)
    assert not marker.exists(), "resume ran the code in last.pt"
    assert str(run / "last.pt") in message and "system'" in message and "\n" not in message


def test_last_pt_loads_with_weights_only_and_resume_still_works(tmp_path, photo_folder):
    data = photo_folder(tmp_path / "d", 2, ["bike", "car"])
    cfg = _cfg(data, tmp_path / "run", batch_size=2, epochs=2, max_steps=2)
    first = train(cfg)
    assert first.interrupted and first.epochs_completed == 1
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)  # no pickle code path needed
    assert state["epoch"] == 1
    cfg.run.max_steps = None
    assert train(cfg, resume=True).epochs_completed == 2


# ---------------------------------------------------------------- item 6: a last batch of one image
def test_last_batch_of_one_image_trains(tmp_path, photo_folder):
    # 5 training images, batch 4: the last batch would hold 1 image, which BatchNorm cannot train on
    # (resnet18 at 32 px has 1x1 feature maps in layer4)
    photo_folder(tmp_path / "d", 3, ["bike"])
    data = photo_folder(tmp_path / "d", 2, ["car"])
    seen: list[int] = []
    result = train(_cfg(data, tmp_path / "run", batch_size=4), on_batch=lambda e, s, idx: seen.append(len(idx)))
    assert result.epochs_completed == 1
    assert sorted(seen) == [5]  # the image of the last batch joined the one before it: all 5 trained


def test_batch_left_with_one_readable_image_is_skipped_not_a_crash(tmp_path, caplog, photo_folder):
    data = photo_folder(tmp_path / "d", 1, ["bike", "car"])
    (data / "car" / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "bike" / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    with caplog.at_level(logging.WARNING):
        result = train(_cfg(data, tmp_path / "run", batch_size=2))
    assert result.epochs_completed == 1
    assert result.history[0]["train_skipped"] == 4  # 2 unreadable + 2 alone in their batch
    assert any("BatchNorm needs 2" in r.getMessage() for r in caplog.records)


def test_merge_tail_batch_sampler_lengths():
    from vehicle_cls.train.loaders import MergeTailBatchSampler

    for n in range(0, 12):
        for b in (1, 2, 3, 4):
            batches = list(MergeTailBatchSampler(range(n), b))
            assert sorted(i for batch in batches for i in batch) == list(range(n))
            assert len(batches) == len(MergeTailBatchSampler(range(n), b))
            if b > 1 and n > 1:
                assert min(len(x) for x in batches) >= 2, (n, b, batches)


# ---------------------------------------------------------------- item 7: non-finite settings
@pytest.mark.parametrize("line, key", [
    ("optim: {lr: .inf}", "optim.lr"),
    ("optim: {lr: .nan}", "optim.lr"),
    ("optim: {momentum: .nan}", "optim.momentum"),
    ("optim: {grad_clip: .inf}", "optim.grad_clip"),
    ("augment: {rotation: -.inf}", "augment.rotation"),
    ("optim: {betas: [0.9, .nan]}", "optim.betas"),
])
def test_non_finite_numbers_are_refused(tmp_path, line, key):
    path = tmp_path / "r.yaml"
    path.write_text(f"data: {{train: x}}\n{line}\n")
    with pytest.raises(ConfigError, match=rf"{path}: {key}: must be a finite number"):
        load_config(path)


def test_non_finite_override_and_python_config_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data: {train: x}\n")
    with pytest.raises(ConfigError, match="optim.lr: must be a finite number, got inf"):
        load_config(path, ["optim.lr=.inf"])
    cfg = TrainConfig()
    cfg.data.train = "x"
    cfg.optim.weight_decay = float("nan")
    with pytest.raises(ConfigError, match="optim.weight_decay: must be a finite number"):
        cfg.validate()


# ---------------------------------------------------------------- item 10: one line naming the file
def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data: {train: x}\noptim:\n  lr: 0.1\n  lr: 0.5\n")
    with pytest.raises(ConfigError, match=rf"{path}: line 4: duplicate key 'lr' \(first given on line 3\)"):
        load_config(path)
    path.write_text("data: {train: x}\noptim: {lr: 0.1}\noptim: {lr: 0.5}\n")
    with pytest.raises(ConfigError, match="line 3: duplicate key 'optim'"):
        load_config(path)


def test_non_utf8_recipe_names_the_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes("data: {train: caf\u00e9}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{path}: not UTF-8"):
        load_config(path)


def test_non_utf8_csv_names_the_file(tmp_path, photo_folder):
    from vehicle_cls.data import DatasetError
    from vehicle_cls.data.csv_images import CsvImages

    photo_folder(tmp_path, 1, ["car"])
    csv = tmp_path / "labels.csv"
    csv.write_bytes("path,label\ncar/x.jpg,Citro\u00ebn\n".encode("latin-1"))
    with pytest.raises(DatasetError, match=rf"{csv}: not UTF-8"):
        CsvImages(csv, check_images=False)


def test_header_only_csv_says_so(tmp_path):
    from vehicle_cls.data import DatasetError
    from vehicle_cls.data.csv_images import CsvImages

    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n")
    with pytest.raises(DatasetError, match=rf"{csv}: no labelled rows"):
        CsvImages(csv)


def test_run_out_dir_that_is_a_file(tmp_path, photo_folder):
    data = photo_folder(tmp_path / "d", 2, ["bike", "car"])
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=rf"run.out_dir {blocker} is a file, not a directory"):
        train(_cfg(data, blocker, batch_size=2))


def test_empty_class_folder_is_named_in_a_warning(tmp_path, caplog, photo_folder):
    from vehicle_cls.data.folders import ClassFolders

    data = photo_folder(tmp_path / "d", 2, ["bike", "car"])
    (data / "truck").mkdir()
    with caplog.at_level(logging.WARNING, logger="vehicle_cls.data.folders"):
        ds = ClassFolders(data)
    assert ds.classes == ["bike", "car", "truck"]
    assert any("'truck'" in r.getMessage() and "no images" in r.getMessage() for r in caplog.records)


def test_cli_errors_go_to_stderr(tmp_path, capsys, cli):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: x}\noptim: {lr: .inf}\n")
    assert cli("train", "--config", str(bad)) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"vehicle-cls train: error: {bad}: optim.lr: must be a finite number, got inf"
    assert cli("eval", "--out", str(tmp_path / "r")) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "--model DIR is required" in captured.err


def test_damaged_splits_json_names_the_file_on_resume(tmp_path, photo_folder):
    data = photo_folder(tmp_path / "d", 2, ["bike", "car"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "splits.json").write_text('{"classes": ["bike", "car"], "train": [[')  # a torn write from old code
    with pytest.raises(ValueError, match=rf"{run / 'splits.json'}: not a readable splits file"):
        train(_cfg(data, run, batch_size=2), resume=True)


def test_eval_out_that_is_a_file(tmp_path, cli, photo_folder):
    data = photo_folder(tmp_path / "d", 1, ["bike", "car"])
    torch.manual_seed(0)
    model = Classifier.create("resnet18", classes=["bike", "car"], preprocess=Preprocess(32, "squash")).save(tmp_path / "m")
    blocker = tmp_path / "report"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=rf"report folder {blocker} is a file, not a directory"):
        cli("eval", "--model", str(model), "--data", str(data), "--layout", "folders", "--workers", "0",
             "--out", str(blocker))


def test_leftovers_of_a_killed_run_are_removed_when_training_starts(tmp_path, photo_folder):
    import subprocess
    import sys

    from vehicle_cls import fileio

    data = photo_folder(tmp_path / "d", 2, ["bike", "car"])
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stale = [run / f".last.pt.{fileio._host_tag()}-{dead}-0badc0de.tmp",
             run / f".history.json.{fileio._host_tag()}-{dead}-0badc0de.tmp",
             run / f".best.{fileio._host_tag()}-{dead}-0badc0de.tmpdir"]
    stale[0].write_bytes(b"half a checkpoint")
    stale[1].write_bytes(b"[")
    stale[2].mkdir()
    (stale[2] / "model.safetensors").write_bytes(b"half")
    train(_cfg(data, run, batch_size=2))
    assert not any(p.exists() for p in stale)
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]


# Issue 17, principle 3: no silent success.

def test_training_on_unreadable_images_fails_without_a_best_bundle(tmp_path):
    data = tmp_path / "garbage"
    for c in CLASSES:
        (data / c).mkdir(parents=True)
        for i in range(4):
            (data / c / f"{i}.jpg").write_bytes(b"not a jpeg at all " * 10)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
data: {{train: {data}, layout: folders, val_fraction: 0.25, num_workers: 0}}
model: {{arch: resnet18, input_size: 32}}
optim: {{name: sgd, lr: 0.01, warmup_epochs: 0}}
run: {{epochs: 1, batch_size: 4, precision: fp32, tensorboard: false, threads: 1, out_dir: {tmp_path / 'run'}}}
""")
    assert main(["train", "--config", str(recipe), "--no-progress"]) != 0
    assert not (tmp_path / "run" / "best").exists()
