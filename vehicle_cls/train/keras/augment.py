"""The recipe's ``augment`` section as Keras preprocessing layers, run on each training batch.

Mapping (torchvision -> Keras): RandomResizedCrop(scale, ratio) -> ``scale_crop_layer`` (below: a
random box of that area and aspect ratio, resized back with ``tf.image.crop_and_resize``);
RandomHorizontalFlip(0.5) -> ``RandomFlip("horizontal")``; RandomRotation(deg) ->
``RandomRotation(deg / 360)`` with black fill; ColorJitter(s) -> ``RandomColorJitter`` (brightness,
contrast, saturation s, hue s / 4); RandAugment -> ``RandAugment``. Settings Keras has no
counterpart for are a one-line error, never silently dropped. Every layer draws from its own
``SeedGenerator``, re-seeded from (seed, epoch) at each epoch start (``reseed``), so a resumed run
replays the same augmentation.
"""

from __future__ import annotations

import functools
from typing import Any

from vehicle_cls.train.config import ConfigError, TrainConfig

SEED_STATE = "seed_generator_state"


def check_supported(cfg: TrainConfig, source: str = "recipe") -> None:
    """One-line ConfigError for augmentation settings the Keras trainer cannot honour."""
    a = cfg.augment
    if not a.enabled:
        return
    problems = [
        ("augment.hflip", a.hflip in (0.0, 0.5), "Keras RandomFlip flips half the images: use 0 or 0.5"),
        ("augment.auto", a.auto in ("none", "randaugment"), "only 'none' or 'randaugment' with Keras"),
        ("augment.random_erasing", a.random_erasing == 0, "not mapped to Keras: use 0"),
        ("augment.mixup_alpha", a.mixup_alpha == 0, "not mapped to Keras: use 0"),
        ("augment.cutmix_alpha", a.cutmix_alpha == 0, "not mapped to Keras: use 0"),
    ]
    for key, ok, why in problems:
        if not ok:
            value = getattr(a, key.split(".")[1])
            raise ConfigError(f"{source}: {key}: {why} (model.backend=keras), got {value!r}")


def build_augmenter(cfg: TrainConfig, seed: int) -> Any:
    """A ``keras.Sequential`` of random layers for float 0-255 NHWC batches (None when disabled)."""
    from vehicle_cls.classifier.keras.loading import import_keras

    keras = import_keras()
    a = cfg.augment
    if not a.enabled:
        return None
    size = cfg.model.input_size
    layers: list[Any] = [scale_crop_layer(size, a.scale, a.ratio, seed + 1)]
    if a.hflip > 0:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 2))
    if a.rotation > 0:
        layers.append(
            keras.layers.RandomRotation(a.rotation / 360.0, fill_mode="constant", fill_value=0.0, seed=seed + 3)
        )
    if a.color_jitter > 0:
        s = a.color_jitter
        layers.append(
            keras.layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=s,
                contrast_factor=s,
                saturation_factor=s,
                hue_factor=min(0.5, s / 4),
                seed=seed + 4,
            )
        )
    if a.auto == "randaugment":
        layers.append(
            keras.layers.RandAugment(
                value_range=(0, 255),
                num_ops=a.randaugment_ops,
                factor=min(1.0, a.randaugment_magnitude / 30.0),
                seed=seed + 5,
            )
        )
    return keras.Sequential(layers, name="augment")


def reseed(models: list[Any], seed: int, epoch: int) -> None:
    """Set every SeedGenerator state in ``models`` from (seed, epoch, its position): epoch-exact RNG."""
    k = 0
    for model in models:
        if model is None:
            continue
        for v in model.variables:
            if v.path.endswith(SEED_STATE):
                v.assign([(seed * 1_000_003 + epoch * 7919 + k) % 2**31, 0])
                k += 1


def scale_crop_layer(size: int, scale: tuple[float, float], ratio: tuple[float, float], seed: int) -> Any:
    """RandomResizedCrop for Keras: per image a box of area in ``scale`` and aspect in ``ratio`` (of the
    pre-resized image), bilinearly resized to ``size``; the class is made on first use (lazy TensorFlow)."""
    return _make_scale_crop()(size, scale, ratio, seed, name="random_scale_crop")


@functools.lru_cache(maxsize=1)
def _make_scale_crop() -> Any:
    import math

    import tensorflow as tf

    from vehicle_cls.classifier.keras.loading import import_keras

    keras = import_keras()

    class _RandomScaleCrop(keras.layers.Layer):  # type: ignore[name-defined]  # keras is imported lazily
        def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float], seed: int, **kwargs: Any):
            super().__init__(**kwargs)
            self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, images: Any, training: bool = True) -> Any:
            if not training:
                return images
            n = tf.shape(images)[0]
            u = keras.random.uniform((4, n), seed=self.seed_generator)
            area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[0]
            log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * u[1]
            r = tf.exp(log_r)
            h = tf.minimum(1.0, tf.sqrt(area / r))
            w = tf.minimum(1.0, tf.sqrt(area * r))
            y0 = (1.0 - h) * u[2]
            x0 = (1.0 - w) * u[3]
            boxes = tf.stack([y0, x0, y0 + h, x0 + w], axis=1)
            return tf.image.crop_and_resize(images, boxes, tf.range(n), (self.size, self.size), method="bilinear")

        def compute_output_shape(self, shape: Any) -> Any:
            return (shape[0], self.size, self.size, shape[-1])

    return _RandomScaleCrop
