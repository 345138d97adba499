"""`vehicle-cls eval` never reports a silent success (issue 17, principle 3): nothing scored, or a split
the data does not have, is an error."""
from __future__ import annotations

import json

from dataset_files import CLASSES, class_folders

from vehicle_cls.cli import main


def test_eval_that_scored_nothing_fails(tiny_bundle, tmp_path, capsys):
    data = tmp_path / "d"
    for c in CLASSES:
        (data / "test" / c).mkdir(parents=True)
        (data / "test" / c / "x.jpg").write_bytes(b"garbage")
    rc = main(["eval", "--model", str(tiny_bundle), "--data", str(data), "--split", "test", "--layout", "folders",
               "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "rep")])
    assert rc != 0 and "no image" in capsys.readouterr().err.lower()


def test_eval_split_that_the_folder_does_not_have_is_refused(tiny_bundle, tmp_path, capsys):
    data = class_folders(tmp_path / "plain", 1)
    rc = main(["eval", "--model", str(tiny_bundle), "--data", str(data), "--split", "test", "--workers", "0",
               "--device", "cpu", "--out", str(tmp_path / "rep")])
    assert rc != 0 and "test" in capsys.readouterr().err
    assert not (tmp_path / "rep" / "report.json").exists()
    # no --split: the whole folder, labelled as such
    assert main(["eval", "--model", str(tiny_bundle), "--data", str(data), "--workers", "0", "--device", "cpu",
                 "--out", str(tmp_path / "rep")]) == 0
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["split"] == "all"
