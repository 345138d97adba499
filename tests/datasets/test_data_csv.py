"""CSV + image folder with a column mapping, including the course project's car_dataset_labels.csv."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from dataset_files import first_photo

from vehicle_cls.data import CsvImages, DatasetError, detect_layout, open_dataset

PHOTOS = Path(__file__).parents[1] / "data" / "vehicle_photos"


@pytest.fixture()
def images(tmp_path) -> Path:
    folder = tmp_path / "car_ims"
    folder.mkdir()
    for i, p in enumerate(["car/car1.jpg", "truck/truck1.jpg", "car/car2.jpg", "minibus/minibus1.jpg"]):
        shutil.copy(PHOTOS / p, folder / f"{i + 1:06d}.jpg")
    return folder


def test_seed_csv_layout_with_split_column(tmp_path, images):
    (tmp_path / "car_dataset_labels.csv").write_text(
        "img_name,class,subset\n"
        "000001.jpg,AM General Hummer SUV 2000,train\n"
        "000002.jpg,Acura RL Sedan 2012,train\n"
        "000003.jpg,AM General Hummer SUV 2000,test\n"
        "000004.jpg,Acura RL Sedan 2012,train\n"
    )
    assert detect_layout(tmp_path) == "seed_csv"
    train = open_dataset(tmp_path, split="train")
    assert train.classes == ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"]
    assert [(Path(s.path).name, s.label) for s in train] == [("000001.jpg", 0), ("000002.jpg", 1), ("000004.jpg", 1)]
    assert Path(train[0].path).parent == images
    test = open_dataset(tmp_path / "car_dataset_labels.csv", split="test")
    assert [(Path(s.path).name, s.label) for s in test] == [("000003.jpg", 0)]


def test_column_mapping_with_boxes_and_given_classes(tmp_path, images):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text(
        "file;kind;left;top;right;bottom\n"
        "000001.jpg;car;1;2;50;60\n"
        "000002.jpg;truck;3;4;90;95\n"
    )
    ds = CsvImages(csv_path, images, path_column="file", label_column="kind",
                   box_columns=("left", "top", "right", "bottom"), classes=["truck", "car"], delimiter=";")
    assert [(Path(s.path).name, s.label, s.box) for s in ds] == [
        ("000001.jpg", 1, (1.0, 2.0, 50.0, 60.0)), ("000002.jpg", 0, (3.0, 4.0, 90.0, 95.0))
    ]


def test_integer_labels_with_offset_and_headerless(tmp_path, images):
    csv_path = tmp_path / "ids.csv"
    csv_path.write_text("000001.jpg,1\n000002.jpg,3\n")
    ds = CsvImages(csv_path, images, path_column=0, label_column=1, header=False,
                   classes=["a", "b", "c"], label_offset=1)
    assert ds.labels.tolist() == [0, 2]
    # without classes: the distinct values, numerically sorted
    csv_path.write_text("000001.jpg,10\n000002.jpg,9\n000003.jpg,10\n")
    ds = CsvImages(csv_path, images, path_column=0, label_column=1, header=False)
    assert ds.classes == ["9", "10"] and ds.labels.tolist() == [1, 0, 1]


def test_malformed_csv_rows_are_reported_by_line(tmp_path, images):
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(
        "path,label,x1,y1,x2,y2\n"
        "000001.jpg,car,1,2,50,60\n"        # line 2: fine
        "000002.jpg,car,1,2\n"              # line 3: too few columns
        "000003.jpg,car,a,2,50,60\n"        # line 4: non-numeric box
        "000004.jpg,car,50,2,10,60\n"       # line 5: x2 <= x1
        "missing.jpg,car,1,2,50,60\n"       # line 6: no such image
        ",car,1,2,3,4\n"                    # line 7: empty path
        "000004.jpg,plane,1,2,50,60\n"      # line 8: class not in the list
    )
    ds = CsvImages(csv_path, images, box_columns=("x1", "y1", "x2", "y2"), classes=["car", "truck"])
    assert [Path(s.path).name for s in ds] == ["000001.jpg"]
    by_line = {p.row: p.reason for p in ds.problems}
    assert set(by_line) == {3, 4, 5, 6, 7, 8}
    assert "expected at least 6 columns" in by_line[3]
    assert "not 4 numbers" in by_line[4]
    assert "empty box" in by_line[5]
    assert "image file not found" in by_line[6]
    assert "empty image path" in by_line[7]
    assert "unknown class 'plane'" in by_line[8]
    with pytest.raises(DatasetError, match=r"6 malformed entries.*bad\.csv: row 3 \(000002\.jpg\)"):
        CsvImages(csv_path, images, box_columns=("x1", "y1", "x2", "y2"), classes=["car", "truck"], on_error="raise")


def test_missing_column_and_missing_file(tmp_path, images):
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("path,label\n000001.jpg,car\n")
    with pytest.raises(DatasetError, match=r"no column 'class'"):
        CsvImages(csv_path, images, label_column="class")
    with pytest.raises(DatasetError, match="CSV file not found"):
        CsvImages(tmp_path / "nope.csv", images)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="empty CSV"):
        CsvImages(tmp_path / "empty.csv", images)


def test_open_dataset_csv_layout_in_a_folder(tmp_path, images):
    (tmp_path / "labels.csv").write_text("path,label\ncar_ims/000001.jpg,car\ncar_ims/000002.jpg,truck\n")
    assert detect_layout(tmp_path / "labels.csv") == "csv"
    ds = open_dataset(tmp_path, layout="csv", split=None)
    assert ds.classes == ["car", "truck"] and [Path(s.path).name for s in ds] == ["000001.jpg", "000002.jpg"]
    (tmp_path / "other.csv").write_text("path,label\n")
    with pytest.raises(DatasetError, match="2 CSV files"):
        open_dataset(tmp_path, layout="csv")


# Issue 17, principle 9: one bad row is that row.

def test_csv_bad_rows_are_those_rows(tmp_path, caplog):
    from vehicle_cls.data import CsvImages

    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(3):
        shutil.copy(first_photo(), folder / f"{i}.jpg")
    (folder / "l.csv").write_text("path,label\n0.jpg,car\n" + "x" * 140_000 + ",car\n1.jpg,truck\n0.jpg,car\n"
                                  "2.jpg,car\n")
    with caplog.at_level(logging.WARNING):
        ds = CsvImages(folder / "l.csv", folder)
    assert sorted(Path(s.path).name for s in ds) == ["0.jpg", "1.jpg", "2.jpg"]
    assert f"{folder / 'l.csv'}: row 3" in caplog.text  # the long field
    assert "duplicate" in caplog.text and "row 5" in caplog.text
