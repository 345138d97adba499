"""One relabel (vehicle_cls.data.relabel) for a test split and for evaluation. The two copies it
replaces differed: the training-side one refused a class *listed* but unused (an empty class folder
in the test set), the evaluation-side one only a class some sample uses, and dropped split and root."""
from __future__ import annotations

import pytest

from vehicle_cls.data import Problem, Sample, SampleList, relabel


def _test_set():
    samples = [Sample("a.jpg", 0), Sample("b.jpg", 2, (1, 2, 3, 4))]
    return SampleList(samples, ["bus", "tractor", "car"], "t", root="/data", split="test", box_format="xyxy",
                      problems=[Problem("x.csv", 3, "c.jpg", "missing")])


def test_a_listed_but_unused_class_is_not_an_error_and_labels_follow_names():
    out = relabel(_test_set(), ["bus", "tractor", "car"], ["car", "bus"], what="test set")
    assert [(s.path, s.label, s.box) for s in out] == [("a.jpg", 1, None), ("b.jpg", 0, (1, 2, 3, 4))]
    assert out.classes == ["car", "bus"]


def test_name_root_split_box_format_and_problems_carry_over():
    out = relabel(_test_set(), ["bus", "tractor", "car"], ["car", "bus"])
    assert (out.name, out.root, out.split, out.box_format) == ("t", "/data", "test", "xyxy")
    assert len(out.problems) == 1
    assert relabel(_test_set(), ["bus", "tractor", "car"], ["car", "bus"], split="eval").split == "eval"


def test_a_used_unknown_class_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"test set t: 1 classes the training set does not know, e.g. \['bus'\]"):
        relabel(_test_set(), ["bus", "tractor", "car"], ["car", "tractor"], what="test set",
                target="the training set")


def test_equal_class_lists_return_the_samples_unchanged():
    ds = _test_set()
    assert relabel(ds, ds.classes, list(ds.classes)) is ds
    plain = relabel([Sample("a.jpg", 1)], ["x", "y"], ["x", "y"])
    assert isinstance(plain, SampleList) and plain[0].label == 1


def test_prepare_splits_relabels_a_separate_test_set_by_name(tmp_path):
    """The training-side call site: a test folder whose classes sort differently, with an extra empty
    class folder, is relabelled into the training classes (the former _remap refused the extra class)."""
    from PIL import Image

    from vehicle_cls.train.config import DataConfig
    from vehicle_cls.train.splits import prepare_splits

    def folder(root, counts):
        for name, n in counts.items():
            (root / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / name / f"{i}.jpg")

    folder(tmp_path / "train", {"bus": 4, "car": 4})
    folder(tmp_path / "test", {"aardvark": 0, "car": 2})
    splits = prepare_splits(DataConfig(train=str(tmp_path / "train"), test=str(tmp_path / "test"), val_fraction=0.25))
    assert splits.classes == ["bus", "car"]
    assert [splits.classes[s.label] for s in splits.test] == ["car", "car"] and splits.test.split == "test"
