"""The bundle is written in one swap: a writer killed between any two of its files leaves the previous
bundle whole (same files, same bytes) and loadable; config.json is read and validated in one place."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import vehicle_cls
from vehicle_cls.classifier import Classifier, Preprocess

CLASSES = ["car", "minibus", "truck"]
KILLED = 9

# A stand-in cropper (what Pipeline.save reads of one: its section, whose weights are a file), then
# a save whose process dies (os._exit, no cleanup) just before it opens its ``KILL_AT``-th file for
# writing under the bundle's parent folder.
WRITER = textwrap.dedent("""
    import builtins, io, os, sys
    import torch
    from vehicle_cls.classifier import Classifier, Preprocess
    from vehicle_cls.pipeline import Pipeline

    from vehicle_cls.testing.stand_ins import StandInCropper

    class StubCropper(StandInCropper):
        policy = None

        def __init__(self, weights):
            self.weights = weights

        def to_config(self):
            return {"config": "faster_rcnn_R_101_FPN_3x", "weights": self.weights}

    target, weights, seed, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    root = os.path.dirname(os.path.abspath(target))
    torch.manual_seed(seed)
    clf = Classifier.create("resnet18", classes=%r, preprocess=Preprocess(32), device="cpu", progress=False)
    pipe = Pipeline(StubCropper(weights), clf, device="cpu")
    opened = 0

    def writes_here(path, writing):
        global opened
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            if os.path.abspath(os.fsdecode(path)).startswith(root + os.sep):
                opened += 1
                if opened == kill_at:
                    os._exit(%d)

    real_open, real_os_open = io.open, os.open

    def patched_open(file, mode="r", *args, **kwargs):
        writes_here(file, any(m in mode for m in "wax+"))
        return real_open(file, mode, *args, **kwargs)

    def patched_os_open(path, flags, *args, **kwargs):
        writes_here(path, bool(flags & (os.O_WRONLY | os.O_RDWR)))
        return real_os_open(path, flags, *args, **kwargs)

    builtins.open = io.open = patched_open
    os.open = patched_os_open
    pipe.save(target)
    print("opened", opened)
""" % (CLASSES, KILLED))


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _save(tmp_path: Path, target: Path, weights: Path, seed: int, kill_at: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(vehicle_cls.__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-c", WRITER, str(target), str(weights), str(seed), str(kill_at)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


def test_a_writer_killed_between_files_leaves_the_previous_bundle_whole(tmp_path):
    target = tmp_path / "models" / "bundle"
    first, second = tmp_path / "a" / "detector.pth", tmp_path / "b" / "detector.pth"
    for path, content in ((first, b"first detector"), (second, b"second detector, another size")):
        path.parent.mkdir()
        path.write_bytes(content)
    run = _save(tmp_path, target, first, seed=1, kill_at=0)
    assert run.returncode == 0, run.stderr
    before = _snapshot(target)
    assert before["cropper/detector.pth"] == b"first detector"
    expected = Classifier.load(target).model.state_dict()

    kill_at = 1
    while True:
        run = _save(tmp_path, target, second, seed=2, kill_at=kill_at)
        if run.returncode == 0:
            break
        assert run.returncode == KILLED, run.stderr
        assert _snapshot(target) == before, f"killed before file write {kill_at}: the bundle changed"
        state = Classifier.load(target).model.state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in expected)
        kill_at += 1
    assert kill_at >= 3  # killed before the first, between the first and second, ... files
    after = _snapshot(target)
    config = json.loads(after["config.json"])
    assert after["cropper/detector.pth"] == b"second detector, another size"
    assert config["cropper"]["weights"] == "cropper/detector.pth"
    assert after["model.safetensors"] != before["model.safetensors"]


def test_classifier_save_records_a_bare_cropper_section_and_the_training_summary(tmp_path):
    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=CLASSES, preprocess=Preprocess(32), device="cpu", progress=False)
    clf.save(tmp_path / "b", training={"epochs": 2}, cropper={"config": "fake"})
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (config["cropper"], config["training"], config["num_classes"]) == ({"config": "fake"}, {"epochs": 2}, 3)
    assert (config["backend"], config["arch"], config["weights"]) == ("torch", "resnet18", "model.safetensors")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["config.json", "model.safetensors"]


def test_two_parts_writing_one_file_is_refused_before_anything_is_written(tmp_path):
    from vehicle_cls.bundle import BundlePart, write_bundle

    def write(path: Path) -> None:
        path.write_bytes(b"x")

    with pytest.raises(ValueError, match="two parts of the bundle write w.bin"):
        write_bundle(tmp_path / "b", BundlePart({"classes": ["a"]}, {"w.bin": write}),
                     cropper=BundlePart({}, {"w.bin": write}))
    assert not (tmp_path / "b").exists()
