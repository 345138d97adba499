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
