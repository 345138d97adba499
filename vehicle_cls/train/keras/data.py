"""``tf.data`` pipelines over a run's ``DataSplits``: the torch trainer's batches, decoded the library's way.

The sample lists are the ones every layout gives (``train/splits.py``); each image is read by
``SampleDataset.load`` (files, S3, ``data.crop`` gt boxes or the crop cache) and resized to the
model input by the bundle's own inference geometry (``KerasBackend.preprocess_images`` without the
normalization), so validation sees what ``Pipeline`` will feed the model. The training order is the
torch trainer's: ``DistributedSampler(seed).set_epoch(epoch)`` batched by ``MergeTailBatchSampler``
(a last batch of one joins the one before), so both backends see the same batches for one seed.
An unreadable image is logged, counted and left out of its batch, never ending the epoch.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from vehicle_cls.data import SampleList
from vehicle_cls.train.config import TrainConfig
from vehicle_cls.train.loaders import MergeTailBatchSampler, crop_arg


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The training batches of ``epoch``: exactly the torch trainer's (single process)."""
    from torch.utils.data.distributed import DistributedSampler

    indices: Any = range(n)  # any sized sequence of indices does; the stub asks for a Dataset
    sampler: DistributedSampler[int] = DistributedSampler(
        indices, num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=False
    )
    sampler.set_epoch(epoch)
    return list(MergeTailBatchSampler(sampler, batch_size))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of training batches per epoch (``MergeTailBatchSampler``'s count)."""
    return len(MergeTailBatchSampler(range(n), batch_size))  # type: ignore[arg-type]


class KerasData:
    """Builds the per-epoch training and the validation ``tf.data.Dataset`` for one run."""

    def __init__(self, cfg: TrainConfig, samples: SampleList, box_format: str, backend: Any):
        from vehicle_cls.data.torch_dataset import SampleDataset

        raw = copy.copy(backend)  # the inference resize, without preprocess_input (done in the model step)
        raw.settings = dataclasses.replace(backend.settings, preprocess="none")
        self.size = backend.settings.input_size
        self.dataset = SampleDataset(
            samples,
            lambda image: raw.preprocess_images([image])[0],
            crop_arg(cfg.data.crop),
            box_format=box_format,
            input_format="numpy",
        )
        self.workers = max(1, cfg.data.num_workers)

    def __len__(self) -> int:
        return len(self.dataset)

    def load_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.int64]:
        """Float 0-255 NHWC pixels, labels and indices of the readable samples, and how many failed."""
        from vehicle_cls.data.torch_dataset import FailedSample

        images, labels, kept = [], [], []
        failed = 0
        for i in indices.tolist():
            item, label, index = self.dataset[i]
            if isinstance(item, FailedSample):
                failed += 1
                continue
            images.append(item)
            labels.append(label)
            kept.append(index)
        pixels = np.stack(images).astype(np.float32) if images else np.zeros((0, self.size, self.size, 3), np.float32)
        return pixels, np.asarray(labels, np.int64), np.asarray(kept, np.int64), np.int64(failed)

    def batches(self, index_batches: list[list[int]]) -> Any:
        """A ``tf.data.Dataset`` of (images, labels, indices, failed) for ``index_batches`` in order,
        decoded ``data.num_workers`` batches at a time (deterministic order)."""
        import tensorflow as tf

        def gen() -> Iterator[np.ndarray]:
            for b in index_batches:
                yield np.asarray(b, np.int64)

        size = self.size

        def load(idx: Any) -> tuple[Any, ...]:
            images, labels, kept, failed = tf.numpy_function(
                self.load_batch, [idx], [tf.float32, tf.int64, tf.int64, tf.int64], stateful=False
            )
            images.set_shape([None, size, size, 3])
            labels.set_shape([None])
            kept.set_shape([None])
            failed.set_shape([])
            return images, labels, kept, failed

        ds = tf.data.Dataset.from_generator(gen, output_signature=tf.TensorSpec([None], tf.int64))
        ds = ds.map(load, num_parallel_calls=self.workers, deterministic=True)
        return ds.prefetch(2)

    def train_epoch(self, batch_size: int, seed: int, epoch: int) -> Any:
        return self.batches(epoch_batches(len(self), batch_size, seed, epoch))

    def in_order(self, batch_size: int) -> Any:
        n = len(self)
        return self.batches([list(range(s, min(n, s + batch_size))) for s in range(0, n, batch_size)])
