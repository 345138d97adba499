"""The devkit reader against the real Stanford Cars .mat files, and against malformed ones we build."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from dataset_files import DEVKIT, FIELDS, make_devkit, row, write_annos

from vehicle_cls.data import DatasetError, StanfordCars, open_dataset, read_class_names
from vehicle_cls.labels import stanford_cars_classes


def _independent_rows(name: str) -> list[tuple]:
    """(fname, x1, y1, x2, y2, class) per row, read with scipy's squeeze_me path (not the reader's)."""
    annos = scipy.io.loadmat(str(DEVKIT / name), squeeze_me=True)["annotations"]
    return [(str(a["fname"]), int(a["bbox_x1"]), int(a["bbox_y1"]), int(a["bbox_x2"]), int(a["bbox_y2"]), int(a["class"]))
            for a in annos]


# ---- the real devkit ------------------------------------------------------------------------

def test_class_names_are_the_196_of_cars_meta():
    independent = [str(n) for n in scipy.io.loadmat(str(DEVKIT / "cars_meta.mat"), squeeze_me=True)["class_names"]]
    names = read_class_names(DEVKIT / "cars_meta.mat")
    assert len(names) == 196
    assert names == independent
    assert names[0] == "AM General Hummer SUV 2000" and names[1] == "Acura RL Sedan 2012"
    assert names == list(stanford_cars_classes())  # the list shipped with the package agrees


@pytest.mark.parametrize(
    "split, anno_file, count",
    [("train", "cars_train_annos.mat", 8144), ("test", "cars_test_annos_withlabels.mat", 8041)],
)
def test_reader_agrees_with_real_devkit_row_for_row(split, anno_file, count):
    ds = StanfordCars(DEVKIT, None, split, check_images=False)
    expected = _independent_rows(anno_file)
    assert len(expected) == count and len(ds) == count
    assert ds.problems == []
    assert len(ds.classes) == 196
    for sample, (fname, x1, y1, x2, y2, cls) in zip(ds, expected):
        assert Path(sample.path).name == fname
        assert sample.box == (x1, y1, x2, y2)
        assert sample.label == cls - 1


def test_spot_check_rows_against_hand_read_values():
    train = StanfordCars(DEVKIT, "/nonexistent", "train", check_images=False)
    # row 0 of cars_train_annos.mat: 00001.jpg, box (39, 116, 569, 375), devkit class 14
    assert train[0].path == str(Path("/nonexistent") / "00001.jpg")
    assert train[0].box == (39.0, 116.0, 569.0, 375.0)
    assert train[0].label == 13 and train.classes[13] == "Audi TTS Coupe 2012"
    assert train[5].box == (259.0, 289.0, 515.0, 416.0) and train[5].label == 122
    test = StanfordCars(DEVKIT, "/nonexistent", "test", check_images=False)
    assert Path(test[0].path).name == "00001.jpg"
    assert test[0].box == (30.0, 52.0, 246.0, 147.0) and test[0].label == 180
    assert Path(test[8040].path).name == "08041.jpg"


def test_label_less_test_file_is_refused_unless_allowed(tmp_path):
    devkit = tmp_path / "devkit"
    devkit.mkdir()
    for name in ("cars_meta.mat", "cars_test_annos.mat"):
        (devkit / name).write_bytes((DEVKIT / name).read_bytes())
    with pytest.raises(DatasetError, match=r"cars_test_annos\.mat.*no 'class' field.*withlabels"):
        StanfordCars(devkit, None, "test", check_images=False)
    ds = StanfordCars(devkit, None, "test", check_images=False, allow_unlabeled=True)
    assert len(ds) == 8041 and set(ds.labels.tolist()) == {-1}
    assert ds[0].box == (30.0, 52.0, 246.0, 147.0)


def test_missing_images_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="images folder not found"):
        StanfordCars(DEVKIT, tmp_path / "nope", "train")


def test_open_dataset_detects_the_devkit():
    ds = open_dataset(DEVKIT, split="test", check_images=False)
    assert isinstance(ds, StanfordCars) and len(ds) == 8041 and ds.split == "test"


# ---- malformed annotations --------------------------------------------------------------------

def test_with_images_every_good_row_is_kept(tmp_path):
    devkit = make_devkit(tmp_path, [row(i) for i in range(4)])
    ds = StanfordCars(devkit, tmp_path / "cars_train", "train")
    assert [Path(s.path).name for s in ds] == ["00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg"]
    assert ds.labels.tolist() == [0, 1, 2, 3] and ds.problems == []
    assert all(Path(s.path).is_file() for s in ds)


BAD_ROWS = [
    (row(1, bbox_x2=5), "empty box"),                     # x2 <= x1
    (row(1, bbox_y1=-3), "box has a negative coordinate"),
    (row(1, **{"class": 197}), r"class id 197 outside 1\.\.196"),
    (row(1, **{"class": 0}), r"class id 0 outside 1\.\.196"),
    (row(1, **{"class": 2.5}), "not an integer"),
    (row(1, bbox_x1=[]), "missing value"),
]


@pytest.mark.parametrize("bad, reason", BAD_ROWS)
def test_malformed_row_is_reported_with_row_and_file_then_skipped(tmp_path, bad, reason):
    devkit = make_devkit(tmp_path, [row(0), bad, row(2)])
    ds = StanfordCars(devkit, tmp_path / "cars_train", "train", on_error="skip")
    assert [Path(s.path).name for s in ds] == ["00001.jpg", "00003.jpg"]
    assert len(ds.problems) == 1
    problem = ds.problems[0]
    assert problem.row == 2 and problem.file.endswith("cars_train_annos.mat")
    assert problem.item in ("00002.jpg", None)
    assert re.search(reason, problem.reason)
    assert "cars_train_annos.mat: row 2" in str(problem)


@pytest.mark.parametrize("bad, reason", BAD_ROWS[:3])
def test_malformed_row_is_refused_with_on_error_raise(tmp_path, bad, reason):
    devkit = make_devkit(tmp_path, [row(0), bad, row(2)])
    with pytest.raises(DatasetError, match=r"cars_train_annos\.mat: row 2 \(00002\.jpg\): " + reason) as info:
        StanfordCars(devkit, tmp_path / "cars_train", "train", on_error="raise")
    assert len(info.value.problems) == 1


def test_missing_image_file_and_duplicates_are_problems(tmp_path):
    rows = [row(0), row(1), row(2), row(3, fname="00001.jpg")]
    devkit = make_devkit(tmp_path, rows, images=["00001.jpg", "00003.jpg"])
    ds = StanfordCars(devkit, tmp_path / "cars_train", "train")
    assert [Path(s.path).name for s in ds] == ["00001.jpg", "00003.jpg"]
    reasons = {p.row: p.reason for p in ds.problems}
    assert set(reasons) == {2, 4}
    assert "image file not found" in reasons[2] and "00002.jpg" in reasons[2]
    assert "duplicate image (also row 1)" in reasons[4]


def test_box_beyond_the_image_is_caught_when_sizes_are_checked(tmp_path):
    # images are 60 wide x 40 high; row 1 reaches x2 = 80
    devkit = make_devkit(tmp_path, [row(0), row(1, bbox_x2=80)], size=(40, 60))
    assert len(StanfordCars(devkit, tmp_path / "cars_train", "train")) == 2  # header not read by default
    ds = StanfordCars(devkit, tmp_path / "cars_train", "train", check_sizes=True)
    assert len(ds) == 1 and ds.problems[0].row == 2 and "outside the 60x40 image" in ds.problems[0].reason


def test_missing_field_refuses_the_file_whatever_on_error(tmp_path):
    fields = tuple(f for f in FIELDS if f != "bbox_x2")
    devkit = make_devkit(tmp_path, [{k: v for k, v in row(0).items() if k != "bbox_x2"}], fields=fields)
    with pytest.raises(DatasetError, match=r"cars_train_annos\.mat: annotations lack field\(s\) \['bbox_x2'\]"):
        StanfordCars(devkit, tmp_path / "cars_train", "train", on_error="skip")


def test_wrong_variable_and_unreadable_file(tmp_path):
    devkit = make_devkit(tmp_path, [row(0)])
    scipy.io.savemat(str(devkit / "cars_train_annos.mat"), {"other": np.zeros(3)})
    with pytest.raises(DatasetError, match="no 'annotations' variable"):
        StanfordCars(devkit, tmp_path / "cars_train", "train")
    (devkit / "cars_train_annos.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match="cannot read MATLAB file"):
        StanfordCars(devkit, tmp_path / "cars_train", "train")


def test_single_file_cars_annos_release(tmp_path):
    from PIL import Image

    fields = ("relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test")
    rows = [
        {"relative_im_path": f"car_ims/{i + 1:06d}.jpg", "bbox_x1": 2, "bbox_y1": 3, "bbox_x2": 20, "bbox_y2": 30,
         "class": 5 + i, "test": i % 2}
        for i in range(4)
    ]
    (tmp_path / "car_ims").mkdir()
    for r in rows:
        Image.new("RGB", (32, 32)).save(tmp_path / r["relative_im_path"])
    (tmp_path / "cars_meta.mat").write_bytes((DEVKIT / "cars_meta.mat").read_bytes())
    write_annos(tmp_path / "cars_annos.mat", rows, fields)
    test = StanfordCars(tmp_path, None, "test")
    assert [Path(s.path).name for s in test] == ["000002.jpg", "000004.jpg"] and test.labels.tolist() == [5, 7]
    assert len(StanfordCars(tmp_path, None, "train")) == 2


def test_bad_on_error_value():
    with pytest.raises(ValueError, match="on_error"):
        StanfordCars(DEVKIT, None, "train", on_error="ignore", check_images=False)


# Issue 17, principle 9: one bad row is that row.

def test_devkit_row_with_class_inf_is_that_row(tmp_path):
    from dataset_files import make_devkit, row

    from vehicle_cls.data import StanfordCars

    devkit = make_devkit(tmp_path, [row(0), row(1, **{"class": float("inf")}), row(2)])
    ds = StanfordCars(devkit, tmp_path / "cars_train")
    assert len(ds) == 2 and len(ds.problems) == 1 and ds.problems[0].row == 2
