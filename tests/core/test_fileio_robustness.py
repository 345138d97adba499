"""Reliability of written files (issue #9 items 8, 11): normal permissions, a kill never leaves a bundle
with the weights of one save and the config of another, leftovers of killed writers are cleaned at the
next run, and a bundle tensor of the wrong kind of dtype is refused."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.bundle import BundleError
from vehicle_cls.classifier.bundle import WEIGHTS_NAME
from vehicle_cls.fileio import atomic_write_bytes, atomic_write_text

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_follow_the_umask(tmp_path, umask_022):
    assert _mode(atomic_write_bytes(tmp_path / "a.bin", b"x")) == 0o644
    assert _mode(atomic_write_text(tmp_path / "r" / "report.md", "x")) == 0o644
    old = os.umask(0o077)
    try:
        assert _mode(atomic_write_bytes(tmp_path / "private.bin", b"x")) == 0o600  # the umask decides
    finally:
        os.umask(old)


def test_bundle_and_downloaded_weights_follow_the_umask(tmp_path, umask_022):
    clf = Classifier.create("resnet18", classes=["a", "b"], preprocess=Preprocess(32, "squash"))
    bundle = clf.save(tmp_path / "bundle")
    assert _mode(bundle / WEIGHTS_NAME) == 0o644 and _mode(bundle / "config.json") == 0o644
    assert _mode(bundle) == 0o755
    from vehicle_cls.weights import fetch_weights

    src = tmp_path / "src.bin"
    src.write_bytes(b"w" * 100)
    import hashlib

    got = fetch_weights(src.as_uri(), cache_dir=tmp_path / "cache", sha256=hashlib.sha256(b"w" * 100).hexdigest())
    assert _mode(got) == 0o644


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False,
                          timeout=180, env=env)


def _save_killed_mid_write(directory: Path, classes: list[str], epoch: int) -> subprocess.CompletedProcess:
    """Save a bundle in a child process that SIGKILLs itself as soon as the config is serialised
    (after the weights were written)."""
    return _run(f"""
        import json, os, signal, torch
        from vehicle_cls.classifier import Classifier, Preprocess
        torch.manual_seed({epoch})
        clf = Classifier.create("resnet18", classes={classes!r}, preprocess=Preprocess(32, "squash"))
        real = json.dumps
        def dying(obj, *a, **k):
            if isinstance(obj, dict) and "classes" in obj:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(obj, *a, **k)
        json.dumps = dying
        clf.save({str(directory)!r}, training={{"epoch": {epoch}}})
    """)


def test_kill_during_bundle_save_keeps_the_old_bundle_whole(tmp_path):
    directory = tmp_path / "best"
    torch.manual_seed(1)
    old = Classifier.create("resnet18", classes=["a", "b"], preprocess=Preprocess(32, "squash"))
    old.save(directory, training={"epoch": 1})
    run = _save_killed_mid_write(directory, ["a", "b", "c"], epoch=2)
    assert run.returncode == -9, run.stderr
    loaded = Classifier.load(directory)  # old code: new weights (3 outputs) with the old config -> refused
    assert loaded.classes == ["a", "b"] and loaded.training == {"epoch": 1}
    for k, v in old.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "best"]
    assert leftovers, "the killed save should have left its temporary directory"
    old.save(directory, training={"epoch": 3})  # the next save cleans what the killed one left
    assert [p.name for p in tmp_path.iterdir()] == ["best"]
    assert Classifier.load(directory).training == {"epoch": 3}


def test_bundle_save_keeps_other_files_in_the_directory(tmp_path):
    directory = tmp_path / "b"
    clf = Classifier.create("resnet18", classes=["a", "b"], preprocess=Preprocess(32, "squash"))
    clf.save(directory)
    (directory / "cropper.safetensors").write_bytes(b"cropper weights")
    clf.save(directory)
    assert (directory / "cropper.safetensors").read_bytes() == b"cropper weights"


def test_temporary_files_of_a_killed_writer_are_cleaned_at_the_next_run(tmp_path):
    run = _run(f"""
        import os, signal
        from vehicle_cls import fileio
        def dying(fd):
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = dying
        fileio.atomic_write_bytes({str(tmp_path / "w" / "report.json")!r}, b"half")
    """)
    assert run.returncode == -9, run.stderr
    left = list((tmp_path / "w").iterdir())
    assert len(left) == 1 and left[0].name.startswith(".report.json.") and left[0].name.endswith(".tmp")
    from vehicle_cls.fileio import clean_stale_temps

    (tmp_path / "w" / "keep.tmp").write_bytes(b"a user's file that merely ends in .tmp")
    assert clean_stale_temps(tmp_path / "w") == left
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["keep.tmp"]


def test_a_live_writers_temporary_file_is_not_touched(tmp_path):
    from vehicle_cls.fileio import clean_stale_temps, temp_name

    mine = tmp_path / temp_name("x.bin")
    mine.write_bytes(b"in progress")  # this process is alive: its temporary file stays
    assert clean_stale_temps(tmp_path) == [] and mine.exists()


def test_killed_weights_download_partial_is_cleaned_at_the_next_download(tmp_path):
    import hashlib

    from vehicle_cls.weights import cached_path, fetch_weights

    src = tmp_path / "src.pth"
    torch.save({"model": {"w": torch.arange(100000.0)}}, src)
    run = _run(f"""
        import os, signal
        from vehicle_cls import weights
        real = os.fsync
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
        weights.fetch_weights({src.as_uri()!r}, cache_dir={str(tmp_path / "cache")!r})
    """)
    assert run.returncode == -9, run.stderr
    folder = cached_path(src.as_uri(), tmp_path / "cache").parent
    assert [p.suffix for p in folder.iterdir()] == [".part"]
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    got = fetch_weights(src.as_uri(), cache_dir=tmp_path / "cache", sha256=sha)
    assert [p.name for p in folder.iterdir()] == [got.name]


def _bundle_with(tmp_path: Path, change) -> Path:
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=["a", "b"], preprocess=Preprocess(32, "squash"))
    directory = clf.save(tmp_path / "m")
    state = load_file(directory / WEIGHTS_NAME)
    save_file(change(state), str(directory / WEIGHTS_NAME))
    return directory


def test_int8_tensor_in_a_bundle_is_refused(tmp_path):
    def to_int8(state):
        state["fc.1.weight"] = (state["fc.1.weight"] * 100).to(torch.int8)
        return state

    with pytest.raises(BundleError, match=r"dtype mismatch: fc\.1\.weight is torch\.int8 but resnet18 needs torch\.float32"):
        Classifier.load(_bundle_with(tmp_path, to_int8))


def test_half_precision_bundle_is_cast_to_the_model_dtype(tmp_path):
    half = {}

    def to_fp16(state):
        half.update({k: v.half() if v.is_floating_point() else v for k, v in state.items()})
        return dict(half)

    loaded = Classifier.load(_bundle_with(tmp_path, to_fp16))
    weight = loaded.model.state_dict()["fc.1.weight"]
    assert weight.dtype == torch.float32 and torch.equal(weight, half["fc.1.weight"].float())


def test_config_json_and_weights_agree_after_many_saves(tmp_path):
    directory = tmp_path / "b"
    for epoch in range(3):
        clf = Classifier.create("resnet18", classes=[f"c{i}" for i in range(2 + epoch)], preprocess=Preprocess(32, "squash"))
        clf.save(directory, training={"epoch": epoch})
        config = json.loads((directory / "config.json").read_text())
        assert config["num_classes"] == 2 + epoch
        assert Classifier.load(directory).model.fc[1].out_features == 2 + epoch


def test_directory_swap_without_renameat2_and_recovery_after_a_kill_mid_swap(tmp_path, monkeypatch):
    from vehicle_cls import fileio

    monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)  # e.g. not Linux: two renames
    target = tmp_path / "d"
    for text in ("one", "two"):
        with fileio.atomic_directory(target) as tmp:
            (tmp / "f.txt").write_text(text)
    assert (target / "f.txt").read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["d"]
    # a kill between the two renames: the old directory is aside under a temporary name, none at target
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    aside = tmp_path / f".d.{fileio._host_tag()}-{dead.stdout.strip()}-abcd1234.old"
    os.rename(target, aside)
    assert fileio.clean_stale_temps(tmp_path) == []  # put back, not deleted
    assert (target / "f.txt").read_text() == "two" and not aside.exists()
