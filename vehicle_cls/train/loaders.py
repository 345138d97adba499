"""Training and validation data loaders: per-rank shards, seeded per epoch, unreadable images skipped,
and never a training batch of one image (BatchNorm cannot train on it): a last batch of one joins the
batch before it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler

from vehicle_cls.train.augment import build_eval_transform, build_train_transform
from vehicle_cls.train.config import TrainConfig
from vehicle_cls.train.distributed import DistInfo, ShardSampler
from vehicle_cls.train.splits import DataSplits


class MergeTailBatchSampler(Sampler[list[int]]):
    """Batches of ``batch_size`` indices from ``sampler``; a final batch of one joins the one before it."""

    def __init__(self, sampler: Sampler[int], batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        previous: list[int] | None = None
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                if previous is not None:
                    yield previous
                previous, batch = batch, []
        if len(batch) == 1 and previous is not None and self.batch_size > 1:
            previous, batch = previous + batch, []
        if previous is not None:
            yield previous
        if batch:
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        full, rest = divmod(n, self.batch_size)
        if rest == 1 and full > 0 and self.batch_size > 1:
            return full
        return full + (1 if rest else 0)


@dataclass
class Loaders:
    """What one rank iterates over: the training loader (with its sampler and seed generator) and validation."""

    train: DataLoader
    val: DataLoader
    sampler: DistributedSampler
    generator: torch.Generator
    local_batch: int

    def start_epoch(self, epoch: int, seed: int) -> None:
        """Re-seed shuffling and augmentation from (seed, epoch), so a resumed run replays the same batches."""
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(seed * 1_000_003 + epoch)


def build_loaders(cfg: TrainConfig, splits: DataSplits, preprocess: Any, dist: DistInfo, pin_memory: bool) -> Loaders:
    """Loaders for this rank; ``run.batch_size`` is global and must split evenly over the ranks."""
    from vehicle_cls.data.torch_dataset import SampleDataset, collate_skip_bad

    crop = crop_arg(cfg.data.crop)
    train_ds = SampleDataset(
        splits.train, build_train_transform(cfg.augment, preprocess), crop, box_format=splits.box_format
    )
    val_ds = SampleDataset(splits.val, build_eval_transform(preprocess), crop, box_format=splits.box_format)
    if cfg.run.batch_size % dist.world_size:
        raise ValueError(f"run.batch_size {cfg.run.batch_size} is not divisible by the {dist.world_size} DDP ranks")
    local_batch = cfg.run.batch_size // dist.world_size
    sampler: DistributedSampler[int] = DistributedSampler(
        train_ds, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=cfg.run.seed, drop_last=False
    )
    generator = torch.Generator()
    workers = cfg.data.num_workers
    train = DataLoader(
        train_ds,
        batch_sampler=MergeTailBatchSampler(sampler, local_batch),
        num_workers=workers,
        collate_fn=collate_skip_bad,
        pin_memory=pin_memory,
        generator=generator,
        persistent_workers=False,
    )
    val = DataLoader(
        val_ds,
        batch_size=max(1, cfg.run.eval_batch_size // dist.world_size),
        sampler=ShardSampler(len(val_ds), dist.rank, dist.world_size),
        num_workers=workers,
        collate_fn=collate_skip_bad,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
    )
    if len(train) == 0:
        raise ValueError("the training split is empty")
    return Loaders(train, val, sampler, generator, local_batch)


def crop_arg(crop: str) -> Any:
    """``data.crop`` as ``SampleDataset`` takes it: "none", "gt" or an opened crop cache."""
    if crop in ("none", "gt"):
        return crop
    from vehicle_cls.data import CropCache

    return CropCache(crop)
