"""A torch ``Dataset`` over samples that never aborts an epoch on a bad image.

``SampleDataset[i]`` is ``(image, label, index)``; an image that cannot be decoded (or cropped)
comes back as a ``FailedSample`` (logged with its path) and ``collate_skip_bad`` drops it from the
batch and reports it in ``Batch.failed``, so the training loop can count it::

    loader = DataLoader(ds, batch_size=32, num_workers=2, collate_fn=collate_skip_bad)
    for images, labels, indices, failed in loader:
        n_bad += len(failed)
        if len(labels) == 0:
            continue
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.data._utils.collate import default_collate

from vehicle_cls.data.sample import Sample, pixel_box
from vehicle_cls.errors import one_line
from vehicle_cls.io.images import ImageError, load_image

logger = logging.getLogger(__name__)

InputFormat = Literal["tensor", "numpy", "pil"]


@dataclass(frozen=True)
class FailedSample:
    """Stands in for an image that could not be loaded; carries the path and the one-line reason."""

    path: str
    reason: str
    index: int = -1

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class Batch(NamedTuple):
    """A collated batch: stacked images, int64 labels and dataset indices, plus the dropped items."""

    images: Any  # Tensor (N, ...) or whatever default_collate makes of the transform's output
    labels: torch.Tensor
    indices: torch.Tensor
    failed: list[FailedSample]


class SampleDataset(Dataset):
    """Decode (and optionally crop) ``samples`` and apply ``transform``; failures become ``FailedSample``.

    ``crop``: ``"none"`` (whole image), ``"gt"`` (the sample's box; whole image when it has none)
    or a ``CropCache`` (the cached detector/GT crop of each sample's source image).
    ``transform`` receives a uint8 CHW tensor (``input_format="tensor"``, what torchvision v2
    transforms take), an HWC uint8 array (``"numpy"``) or a PIL image (``"pil"``).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable[[Any], Any] | None = None,
        crop: Any = "none",
        *,
        box_format: str | None = None,
        input_format: InputFormat = "tensor",
    ):
        if isinstance(crop, str) and crop not in ("none", "gt"):
            raise ValueError(f"crop must be 'none', 'gt' or a CropCache, not {crop!r}")
        if not isinstance(crop, str) and not hasattr(crop, "lookup"):
            raise TypeError(f"crop must be 'none', 'gt' or a CropCache, not {type(crop).__name__}")
        if input_format not in ("tensor", "numpy", "pil"):
            raise ValueError(f"input_format must be 'tensor', 'numpy' or 'pil', not {input_format!r}")
        self.samples = samples
        self.transform = transform
        self.crop = crop
        self.box_format: str = box_format if box_format else getattr(samples, "box_format", "devkit")
        self.input_format = input_format
        self.classes = list(getattr(samples, "classes", []))

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> np.ndarray:
        """The RGB uint8 HxWx3 pixels of sample ``index`` after cropping (raises on failure)."""
        sample = self.samples[index]
        if not isinstance(self.crop, str):
            path = self.crop.lookup(sample.path, sample.box)
            if path is None:
                raise LookupError("not in the crop cache (run `vehicle-cls crop` on this dataset first)")
            return load_image(path)
        image = load_image(sample.path)
        if self.crop == "gt" and sample.box is not None:
            x1, y1, x2, y2 = pixel_box(sample.box, image.shape[:2], self.box_format)
            image = np.ascontiguousarray(image[y1:y2, x1:x2])
        return image

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        sample = self.samples[index]
        try:
            image = self.load(index)
            item = self._convert(image)
            if self.transform is not None:
                item = self.transform(item)
        except Exception as exc:  # one bad image must not end the epoch
            reason = one_line(exc)
            if not isinstance(exc, ImageError):
                reason = f"{type(exc).__name__}: {reason}"
            logger.warning("skipping sample %d (%s): %s", index, sample.path, reason)
            return FailedSample(sample.path, reason, index), sample.label, index
        return item, sample.label, index

    def _convert(self, image: np.ndarray) -> Any:
        if self.input_format == "numpy":
            return image
        if self.input_format == "pil":
            from PIL import Image

            return Image.fromarray(image)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def collate_skip_bad(items: list[tuple[Any, int, int]]) -> Batch:
    """Collate ``(image, label, index)`` items, dropping ``FailedSample`` ones into ``Batch.failed``."""
    good = [it for it in items if not isinstance(it[0], FailedSample)]
    failed = [it[0] for it in items if isinstance(it[0], FailedSample)]
    if good:
        images = default_collate([it[0] for it in good])
    else:
        images = torch.empty(0)
    labels = torch.tensor([int(it[1]) for it in good], dtype=torch.int64)
    indices = torch.tensor([int(it[2]) for it in good], dtype=torch.int64)
    return Batch(images, labels, indices, failed)
