"""Outputs of the commands (issue 17, principles 1 and 9): an output never destroys an input, and an output
that cannot be written is one line naming it. Each test was seen failing on the code before its fix."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from dataset_files import class_folders, first_photo

from vehicle_cls.cli import main


def test_predict_out_onto_its_own_input_is_refused_up_front(tiny_bundle, tmp_path, capsys):
    photo = tmp_path / "victim.jpg"
    shutil.copy(first_photo(), photo)
    before = photo.read_bytes()
    for out in (photo, tmp_path / "." / "victim.jpg"):
        assert main(["predict", str(photo), "--model", str(tiny_bundle), "--out", str(out), "--no-progress"]) != 0
        err = capsys.readouterr().err
        assert "victim.jpg" in err and "input" in err and err.count("\n") == 1
        assert photo.read_bytes() == before
    # a folder input holding the --out file: the same
    assert main(["predict", str(tmp_path), "--model", str(tiny_bundle), "--out", str(photo)]) != 0
    assert photo.read_bytes() == before


def test_save_vis_into_the_source_folder_is_refused(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(first_photo(), folder / "a.jpg")
    (folder / "clip.mp4").write_bytes(b"not really a video")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for argv in ([str(folder)], [str(folder / "a.jpg"), str(folder / "clip.mp4")]):
        assert main(["predict", *argv, "--model", str(tiny_bundle), "--save-vis", str(folder), "--no-progress"]) != 0
        err = capsys.readouterr().err
        assert str(folder) in err and "--save-vis" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_eval_and_crop_out_into_the_data_folder_are_refused(tiny_bundle, tmp_path, capsys):
    data = class_folders(tmp_path / "d", 1)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert main(["crop", str(data), "--out", str(data / "crops"), "--mode", "gt", "--no-progress"]) != 0
    assert "input folder" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_bundle), "--data", str(data), "--out", str(data), "--workers", "0"]) != 0
    assert "input folder" in capsys.readouterr().err
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_export_out_into_the_bundle_is_refused(tiny_bundle, tmp_path, capsys):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    weights = bundle / "model.safetensors"
    before = weights.read_bytes()
    assert main(["export", "--model", str(bundle), "--out", str(weights)]) != 0
    assert "model.safetensors" in capsys.readouterr().err
    assert weights.read_bytes() == before


def test_out_and_save_vis_at_a_file_or_a_full_disk_are_one_line(tiny_bundle, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    photo = first_photo()
    for extra in (["--out", str(blocker / "x.jsonl")], ["--save-vis", str(blocker)], ["--out", str(tmp_path)]):
        assert main(["predict", str(photo), "--model", str(tiny_bundle), "--no-progress", *extra]) != 0
        err = capsys.readouterr().err
        assert "Errno" not in err and str(blocker if "--save-vis" in extra or "x.jsonl" in extra[1] else tmp_path) in err
    if Path("/dev/full").exists():
        assert main(["predict", str(photo), "--model", str(tiny_bundle), "--out", "/dev/full", "--no-progress"]) != 0
        err = capsys.readouterr().err
        assert "/dev/full" in err and "Errno" not in err and "no space" in err.lower()


def test_unreadable_files_in_a_predict_folder_are_not_lost(tiny_bundle, tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(first_photo(), folder / "good.jpg")
    os.symlink(tmp_path / "gone.jpg", folder / "dangling.jpg")
    out = tmp_path / "p.jsonl"
    with caplog.at_level(logging.WARNING):
        main(["predict", str(folder), "--model", str(tiny_bundle), "--out", str(out), "--no-progress"])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert any("dangling.jpg" in r["source"] and r.get("error") for r in rows) or "dangling.jpg" in caplog.text
