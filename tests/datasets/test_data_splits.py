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


def test_groups_keep_one_photos_vehicles_on_one_side():
    # 60 photos, some holding 2 or 3 annotated vehicles (COCO, CSV with several rows per image)
    rng = np.random.default_rng(5)
    photos = [f"p{i}.jpg" for i in range(60)]
    groups = [p for i, p in enumerate(photos) for _ in range(1 + i % 3)]
    labels = np.array([int(g[1:-4]) % 4 for g in groups])  # every vehicle of a photo shares the label here
    order = rng.permutation(len(groups))
    groups, labels = [groups[i] for i in order], labels[order]
    train, val = stratified_split(labels, 0.25, seed=1, groups=groups)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(groups)))
    assert not {groups[i] for i in train} & {groups[i] for i in val}  # no photo on both sides
    # 25 % of each class's photos (15 photos per class -> 4) go to validation
    val_photos = {groups[i] for i in val}
    assert [sum(int(p[1:-4]) % 4 == c for p in val_photos) for c in range(4)] == [4, 4, 4, 4]
    # without groups the same data puts some photo on both sides: what the grouping prevents
    t, v = stratified_split(labels, 0.25, seed=1)
    assert {groups[i] for i in t} & {groups[i] for i in v}


def test_distinct_groups_give_the_ungrouped_split():
    labels = np.repeat(np.arange(3), 17)
    np.random.default_rng(0).shuffle(labels)
    plain = stratified_split(labels, 0.2, seed=9)
    grouped = stratified_split(labels, 0.2, seed=9, groups=[f"{i}.jpg" for i in range(len(labels))])
    assert all(np.array_equal(a, b) for a, b in zip(plain, grouped))
    with pytest.raises(ValueError, match="groups has 2 keys for 51 labels"):
        stratified_split(labels, 0.2, groups=["a", "b"])
