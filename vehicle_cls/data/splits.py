"""Stratified train/validation splits carved from the training set, reproducible by seed.

The validation split is for model selection (early stopping, best checkpoint); the test split is
only ever evaluated, so ``split_dataset`` refuses a dataset tagged ``split="test"``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

from vehicle_cls.data.sample import SampleList


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    val_fraction: float = 0.1,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train_indices, val_indices): per class ``round(n * val_fraction)`` go to validation.

    Rounding is half-up; every class keeps at least one training sample, so a class with a single
    sample stays in train. The same labels and seed always give the same split. ``groups`` (one key per
    sample, e.g. its image path): samples sharing a key land on the same side, so two annotated vehicles
    of one photo never sit in train and validation at once; groups are stratified by their first
    sample's label, and all-distinct keys give exactly the ungrouped split.
    """
    if groups is not None:
        if len(groups) != len(labels):
            raise ValueError(f"groups has {len(groups)} keys for {len(labels)} labels")
        by_key: dict[Hashable, list[int]] = {}
        for i, key in enumerate(groups):
            by_key.setdefault(key, []).append(i)
        lists = list(by_key.values())
        group_labels = np.asarray(labels)[[m[0] for m in lists]]
        g_train, g_val = stratified_split(group_labels, val_fraction, seed)
        return _members(g_train, lists), _members(g_val, lists)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels contain negative (unlabelled) entries; cannot stratify them")
    rng = np.random.default_rng(seed)
    val: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_val = min(len(members) - 1, math.floor(len(members) * val_fraction + 0.5))
        if n_val > 0:
            val.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask).astype(np.int64), val_idx.astype(np.int64)


def _members(picked: np.ndarray, lists: list[list[int]]) -> np.ndarray:
    """The sorted sample indices of the picked groups."""
    return np.sort(np.asarray([i for g in picked for i in lists[g]], dtype=np.int64))


def split_by_photo(samples: SampleList, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``stratified_split`` of ``samples`` with the photo as the group: one photo's annotated vehicles (COCO, CSV
    rows of one image) all land on one side, and one sample per photo splits exactly as ungrouped."""
    return stratified_split(samples.labels, fraction, seed, groups=[s.path for s in samples])


def split_dataset(dataset: SampleList, val_fraction: float = 0.1, seed: int = 0) -> tuple[SampleList, SampleList]:
    """(train, val) subsets of a training dataset by ``split_by_photo``; refuses the test split."""
    if getattr(dataset, "split", None) == "test":
        raise ValueError(
            f"{dataset.name}: refusing to carve a validation split from the test split "
            "(test is for final evaluation only)"
        )
    train_idx, val_idx = split_by_photo(dataset, val_fraction, seed)
    return (
        dataset.subset(train_idx, f"{dataset.name}:train(seed={seed})"),
        dataset.subset(val_idx, f"{dataset.name}:val(seed={seed})", split="val"),
    )
