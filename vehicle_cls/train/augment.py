"""Image transforms for training (torchvision.transforms.v2) and evaluation (the inference preprocessing).

The evaluation transform calls the classifier's ``preprocess_images`` itself, so the tensors a
model is selected and evaluated on are exactly the tensors it sees at inference time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from vehicle_cls.train.config import AugmentConfig

Transform = Callable[[Any], torch.Tensor]


def to_uint8_chw(image: Any) -> torch.Tensor:
    """RGB uint8 HxWx3 numpy / PIL image / uint8 CHW tensor -> uint8 CHW tensor (no copy when possible)."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 CHW tensor, got {image.dtype} {tuple(image.shape)}")
        return image
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 array, got {array.dtype} {array.shape}")
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # torch refuses to wrap read-only memory silently
        array = array.copy()
    return torch.from_numpy(array).permute(2, 0, 1)


def to_numpy_hwc(image: Any) -> np.ndarray:
    """Any accepted image form -> RGB uint8 HxWx3 numpy array (what ``preprocess_images`` takes)."""
    if isinstance(image, torch.Tensor):
        return to_uint8_chw(image).permute(1, 2, 0).contiguous().numpy()
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    return np.asarray(image)


class EvalTransform:
    """The inference preprocessing for one image: ``preprocess_images([image], cfg, "cpu")[0]``."""

    def __init__(self, preprocess: Any):
        self.preprocess = preprocess

    def __call__(self, image: Any) -> torch.Tensor:
        from vehicle_cls.classifier import preprocess_images

        return preprocess_images([to_numpy_hwc(image)], self.preprocess, "cpu")[0]

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocess!r})"


class TrainTransform:
    """Random augmentation on uint8, then float conversion and normalization with the model's mean/std."""

    def __init__(self, cfg: AugmentConfig, preprocess: Any):
        from torchvision.transforms import InterpolationMode, v2

        interp = InterpolationMode.BICUBIC if preprocess.interpolation == "bicubic" else InterpolationMode.BILINEAR
        size = int(preprocess.input_size)
        ops: list[Any] = [
            v2.RandomResizedCrop(
                size, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio), interpolation=interp, antialias=True
            )
        ]
        if cfg.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(cfg.hflip))
        if cfg.rotation > 0:
            ops.append(v2.RandomRotation(cfg.rotation, interpolation=interp))
        if cfg.color_jitter > 0:
            s = cfg.color_jitter
            ops.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s, hue=min(0.5, s / 4)))
        if cfg.auto == "trivial":
            ops.append(v2.TrivialAugmentWide(interpolation=interp))
        elif cfg.auto == "randaugment":
            ops.append(v2.RandAugment(cfg.randaugment_ops, cfg.randaugment_magnitude, interpolation=interp))
        ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(preprocess.mean), list(preprocess.std))]
        if cfg.random_erasing > 0:
            ops.append(v2.RandomErasing(cfg.random_erasing, value=0))
        self.transform = v2.Compose(ops)

    def __call__(self, image: Any) -> torch.Tensor:
        return self.transform(to_uint8_chw(image)).contiguous()

    def __repr__(self) -> str:
        return f"TrainTransform({self.transform!r})"


def build_train_transform(cfg: AugmentConfig, preprocess: Any) -> Transform:
    """The training transform; with augmentation disabled it is the evaluation transform (seed-style)."""
    return TrainTransform(cfg, preprocess) if cfg.enabled else EvalTransform(preprocess)


def build_eval_transform(preprocess: Any) -> Transform:
    """The evaluation transform: identical to inference preprocessing."""
    return EvalTransform(preprocess)


def build_batch_mix(
    cfg: AugmentConfig, num_classes: int
) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None:
    """MixUp and/or CutMix on a batch (one of them chosen per batch), or None when both are off."""
    if not cfg.enabled or (cfg.mixup_alpha <= 0 and cfg.cutmix_alpha <= 0):
        return None
    from torchvision.transforms import v2

    mixes = []
    if cfg.mixup_alpha > 0:
        mixes.append(v2.MixUp(alpha=cfg.mixup_alpha, num_classes=num_classes))
    if cfg.cutmix_alpha > 0:
        mixes.append(v2.CutMix(alpha=cfg.cutmix_alpha, num_classes=num_classes))
    return mixes[0] if len(mixes) == 1 else v2.RandomChoice(mixes)
