"""Class folders and the Kaggle Stanford Cars layout, built in tmp_path from real photos."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dataset_files import PHOTOS, copy_photos, make_kaggle

from vehicle_cls.data import ClassFolders, DatasetError, KaggleCars, detect_layout, open_dataset


def test_class_folders_reads_sorted_classes_and_files(tmp_path):
    copy_photos(tmp_path, {
        "truck": ["truck/truck1.jpg", "truck/truck2.jpg"],
        "car": ["car/car1.jpg", "car/car2.jpg", "car/car3.jpg"],
        "minibus": ["minibus/minibus1.jpg"],
    })
    (tmp_path / "car" / "notes.txt").write_text("not an image")
    (tmp_path / "car" / ".ipynb_checkpoints").mkdir()
    shutil.copy(PHOTOS / "car/car4.jpg", tmp_path / "car" / ".ipynb_checkpoints" / "car4-checkpoint.jpg")
    (tmp_path / ".hidden_class").mkdir()
    (tmp_path / "car" / "sub").mkdir()
    shutil.copy(PHOTOS / "car/car4.jpg", tmp_path / "car" / "sub" / "car4.jpg")
    ds = ClassFolders(tmp_path)
    assert ds.classes == ["car", "minibus", "truck"]
    got = [(Path(s.path).relative_to(tmp_path).as_posix(), s.label) for s in ds]
    assert got == [
        ("car/car1.jpg", 0), ("car/car2.jpg", 0), ("car/car3.jpg", 0), ("car/sub/car4.jpg", 0),
        ("minibus/minibus1.jpg", 1), ("truck/truck1.jpg", 2), ("truck/truck2.jpg", 2),
    ]
    assert ds.class_counts() == {"car": 4, "minibus": 1, "truck": 2}
    assert all(s.box is None for s in ds) and ds.problems == []
    assert detect_layout(tmp_path) == "folders"
    assert [s.path for s in open_dataset(tmp_path)] == [s.path for s in ds]


def test_class_folders_with_fixed_classes_reports_strays(tmp_path):
    copy_photos(tmp_path, {"car": ["car/car1.jpg"], "truck": ["truck/truck1.jpg"], "boat": ["minibus/minibus1.jpg"]})
    shutil.copy(PHOTOS / "car/car2.jpg", tmp_path / "loose.jpg")
    ds = ClassFolders(tmp_path, classes=["truck", "car"])
    assert [(Path(s.path).name, s.label) for s in ds] == [("car1.jpg", 1), ("truck1.jpg", 0)]
    reasons = sorted(str(p) for p in ds.problems)
    assert len(reasons) == 2
    assert any("boat" in r and "not one of the 2 classes" in r for r in reasons)
    assert any("loose.jpg" in r and "outside any class folder" in r for r in reasons)
    with pytest.raises(DatasetError, match="2 malformed entries"):
        ClassFolders(tmp_path, classes=["truck", "car"], on_error="raise")


def test_class_folders_errors(tmp_path):
    with pytest.raises(DatasetError, match="dataset folder not found"):
        ClassFolders(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no class folders"):
        ClassFolders(tmp_path)


def test_kaggle_layout_with_names_and_boxes(tmp_path):
    make_kaggle(tmp_path)
    assert detect_layout(tmp_path) == "kaggle"
    train = KaggleCars(tmp_path, "train")
    assert train.classes == ["Ram C/V Cargo Van Minivan 2012", "Acura RL Sedan 2012", "Audi TTS Coupe 2012"]
    got = {Path(s.path).name: (s.label, s.box) for s in train}
    assert got == {
        "car1.jpg": (0, (10.0, 20.0, 90.0, 80.0)),
        "car2.jpg": (0, (5.0, 5.0, 50.0, 60.0)),
        "truck1.jpg": (1, (1.0, 2.0, 99.0, 98.0)),
    }
    assert train.box_format == "devkit" and train.problems == []
    test = open_dataset(tmp_path, split="test")
    assert {Path(s.path).name: s.label for s in test} == {"minibus1.jpg": 2, "car3.jpg": 1}
    assert test.classes == train.classes and test.split == "test"


def test_kaggle_without_csv_uses_the_union_of_split_folders(tmp_path):
    make_kaggle(tmp_path, with_csv=False)
    train = KaggleCars(tmp_path / "car_data", "train")
    test = KaggleCars(tmp_path, "test")
    expected = sorted(["Ram C-V Cargo Van Minivan 2012", "Acura RL Sedan 2012", "Audi TTS Coupe 2012"])
    assert train.classes == test.classes == expected
    assert {Path(s.path).name: s.label for s in test} == {"minibus1.jpg": 1, "car3.jpg": 0}
    assert all(s.box is None for s in train)


def test_kaggle_annotation_problems(tmp_path):
    make_kaggle(tmp_path)
    (tmp_path / "anno_train.csv").write_text(
        "image_name,x_min,y_min,x_max,y_max,label\n"
        "car1.jpg,10,20,5,80,1\n"        # line 2: x2 <= x1
        "car2.jpg,5,5,50,60,2\n"         # line 3: label disagrees with its folder
        "truck1.jpg,1,2,99\n"            # line 4: too few columns (image kept without a box)
        "ghost.jpg,1,2,3,4,1\n"          # line 5: not in the folders
        "car9.jpg,1,2,3,4,999\n"         # line 6: unknown class
    )
    ds = KaggleCars(tmp_path, "train")
    assert [(Path(s.path).name, s.box) for s in ds] == [("truck1.jpg", None)]
    by_line = {p.row: p for p in ds.problems}
    assert set(by_line) == {2, 3, 4, 5, 6}
    assert "empty box" in by_line[2].reason
    assert "disagrees with the folder" in by_line[3].reason
    assert "expected 6 columns" in by_line[4].reason
    assert "not found in the class folders" in by_line[5].reason
    assert "999 outside 1..3" in by_line[6].reason
    assert all(p.file.endswith("anno_train.csv") for p in ds.problems)
    with pytest.raises(DatasetError, match=r"anno_train\.csv: row 2 \(car1\.jpg\): empty box"):
        KaggleCars(tmp_path, "train", on_error="raise")


def test_kaggle_missing_split(tmp_path):
    with pytest.raises(DatasetError, match=r"no train/ class folders"):
        KaggleCars(tmp_path, "train")


# Issue 17, principle 9: one bad row is that row.

def test_kaggle_annotation_row_over_the_csv_limit_is_that_row(tmp_path):
    from dataset_files import make_kaggle

    from vehicle_cls.data import KaggleCars

    make_kaggle(tmp_path)
    (tmp_path / "anno_train.csv").write_text("car1.jpg,10,20,90,80,1\n" + "y" * 140_000 + ",1,2,3,4,1\n"
                                             "truck1.jpg,1,2,99,98,2\n")
    ds = KaggleCars(tmp_path, "train")
    assert {Path(s.path).name: s.box for s in ds}["truck1.jpg"] == (1.0, 2.0, 99.0, 98.0)
    assert [p.row for p in ds.problems] == [2] and "field limit" in ds.problems[0].reason
