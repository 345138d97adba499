"""Stratified validation split: proportions per class, determinism by seed, disjointness."""
from __future__ import annotations

import numpy as np
import pytest

from vehicle_cls.data import Sample, SampleList, split_dataset, stratified_split


def test_per_class_proportions_and_disjoint_cover():
    # class 0: 50 samples, class 1: 20, class 2: 7, class 3: 1 (interleaved)
    labels = np.array([0] * 50 + [1] * 20 + [2] * 7 + [3])
    np.random.default_rng(123).shuffle(labels)
    train, val = stratified_split(labels, val_fraction=0.2, seed=7)
    assert len(np.intersect1d(train, val)) == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    val_counts = np.bincount(labels[val], minlength=4).tolist()
    # round-half-up of 20% per class: 10, 4, 1.4 -> 1, and the single sample stays in train
    assert val_counts == [10, 4, 1, 0]
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)


def test_every_class_keeps_a_training_sample():
    labels = np.array([0, 0, 1, 2, 2, 2])
    train, val = stratified_split(labels, val_fraction=0.9, seed=0)
    assert set(labels[train].tolist()) == {0, 1, 2}
    assert np.bincount(labels[val], minlength=3).tolist() == [1, 0, 2]


def test_same_seed_same_split_other_seed_other_split():
    labels = np.repeat(np.arange(5), 40)
    a = stratified_split(labels, 0.25, seed=3)
    b = stratified_split(labels, 0.25, seed=3)
    c = stratified_split(labels, 0.25, seed=4)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert len(a[1]) == len(c[1]) == 50


def test_bad_arguments():
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split([0, 1], val_fraction=1.0)
    with pytest.raises(ValueError, match="unlabelled"):
        stratified_split([0, -1, 1], 0.5)


def test_split_dataset_refuses_the_test_split():
    samples = [Sample(f"{i}.jpg", i % 2) for i in range(10)]
    train_ds = SampleList(samples, ["a", "b"], "toy", split="train")
    tr, va = split_dataset(train_ds, 0.2, seed=1)
    assert len(tr) == 8 and len(va) == 2 and va.split == "val" and tr.classes == ["a", "b"]
    assert sorted(va.labels.tolist()) == [0, 1]
    assert {s.path for s in tr}.isdisjoint({s.path for s in va})
    with pytest.raises(ValueError, match="test split"):
        split_dataset(SampleList(samples, ["a", "b"], "toy", split="test"))
