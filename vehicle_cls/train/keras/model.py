"""The Keras classifier of a recipe: a ``keras.applications`` backbone + Dropout + Dense head.

Only arches whose torchvision name maps to one ``keras.applications`` model are offered; each
carries its own input preprocessing (``preprocess_input`` mode, stored in the bundle so inference
applies the same). The backbone is called with ``training=False`` when it starts from ImageNet
weights, so its BatchNorm layers stay in inference mode even after unfreezing (Keras' transfer
learning guide); from scratch (``weights: null``) BatchNorm trains normally, with the running-statistics
momentum of torch's ``BatchNorm2d`` default (``TORCH_BN_MOMENTUM``): ``keras.applications`` use 0.99-0.999,
whose statistics after the few hundred steps of a small recipe are still mostly their initial values, so
evaluation sat at chance while training accuracy rose (MobileNetV3-Small, 270 steps on the shipped
photos: val top-1 16.7 %, 90.1 % with 0.9).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vehicle_cls.train.config import ConfigError, TrainConfig

BACKBONE_NAME = "backbone"
HEAD_NAME = "head"


@dataclass(frozen=True)
class KerasArch:
    """One ``keras.applications`` constructor and the preprocessing its weights expect."""

    constructor: str  # attribute of keras.applications
    preprocess: str  # KerasSettings.preprocess mode: caffe | tf | torch | none (model rescales itself)
    min_size: int = 32


ARCHS: dict[str, KerasArch] = {
    "resnet50": KerasArch("ResNet50", "caffe"),
    "resnet101": KerasArch("ResNet101", "caffe"),
    "resnet152": KerasArch("ResNet152", "caffe"),
    "mobilenet_v2": KerasArch("MobileNetV2", "tf"),
    "mobilenet_v3_small": KerasArch("MobileNetV3Small", "none"),
    "mobilenet_v3_large": KerasArch("MobileNetV3Large", "none"),
    "efficientnet_b0": KerasArch("EfficientNetB0", "none"),
    "convnext_tiny": KerasArch("ConvNeXtTiny", "none"),
}

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
TORCH_BN_MOMENTUM = 0.9  # Keras' weight of the old running statistics = 1 - torch's BatchNorm momentum (0.1)


def keras_arch(cfg: TrainConfig, source: str = "recipe") -> KerasArch:
    """The ``KerasArch`` of ``model.arch``, or a one-line ConfigError listing the choices."""
    arch = ARCHS.get(cfg.model.arch)
    if arch is None:
        raise ConfigError(
            f"{source}: model.arch: {cfg.model.arch!r} has no keras.applications counterpart for "
            f"model.backend=keras; choose one of {', '.join(ARCHS)}"
        )
    if cfg.model.input_size < arch.min_size:
        raise ConfigError(
            f"{source}: model.input_size: {cfg.model.arch} in Keras needs >= {arch.min_size}, "
            f"got {cfg.model.input_size}"
        )
    return arch


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Build layers under ``precision``'s Keras policy, then put the previous global policy back."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(cfg: TrainConfig, num_classes: int, precision: str, seed: int) -> Any:
    """The functional model ``backbone -> Dropout -> Dense(num_classes)`` (float32 logits)."""
    from vehicle_cls.classifier.keras.loading import import_keras

    keras = import_keras()
    arch = keras_arch(cfg)
    m = cfg.model
    size = m.input_size
    with dtype_policy(precision):
        keras.utils.set_random_seed(seed)  # the initial weights (the only use of the global seed)
        ctor = getattr(keras.applications, arch.constructor)
        kwargs: dict[str, Any] = {
            "include_top": False,
            "weights": m.weights,
            "input_shape": (size, size, 3),
            "pooling": "avg",
        }
        if arch.preprocess == "none" and arch.constructor.startswith("MobileNetV3"):
            kwargs["include_preprocessing"] = True
        backbone = ctor(**kwargs)
        backbone.name = BACKBONE_NAME
        for layer in backbone.layers:  # read at call time; no effect in inference mode (ImageNet weights)
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = TORCH_BN_MOMENTUM
        inputs = keras.Input((size, size, 3), name="image")
        features = backbone(inputs, training=False) if m.weights else backbone(inputs)
        x = keras.layers.Dropout(m.dropout, seed=seed)(features) if m.dropout > 0 else features
        logits = keras.layers.Dense(num_classes, dtype="float32", name=HEAD_NAME)(x)
    return keras.Model(inputs, logits, name=f"{m.arch}_keras")


def set_backbone_trainable(model: Any, trainable: bool) -> None:
    """Freeze (head only) or unfreeze the backbone."""
    model.get_layer(BACKBONE_NAME).trainable = trainable
