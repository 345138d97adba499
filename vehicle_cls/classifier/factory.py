"""Build torchvision classification backbones by name with a new Dropout + Linear head.

ImageNet weights are named by torchvision's weights API and downloaded once into the vehicle_cls
weights cache (``weights.fetch_weights``: temporary file, checksum, atomic rename), the same cache
``vehicle-cls download --list`` shows. Offline, a ``WeightsUnavailableError`` says which URL to
fetch and where to put the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from vehicle_cls.errors import VehicleClsError

logger = logging.getLogger(__name__)

# (name prefix, dotted path of the final Linear layer); first match wins
_HEAD_PATHS: tuple[tuple[str, str], ...] = (
    ("resnet", "fc"),
    ("resnext", "fc"),
    ("wide_resnet", "fc"),
    ("regnet_", "fc"),
    ("shufflenet_v2", "fc"),
    ("efficientnet", "classifier.1"),
    ("mobilenet_v2", "classifier.1"),
    ("mnasnet", "classifier.1"),
    ("mobilenet_v3", "classifier.3"),
    ("convnext", "classifier.2"),
    ("densenet", "classifier"),
    ("vgg", "classifier.6"),
    ("alexnet", "classifier.6"),
    ("vit_", "heads.head"),
    ("swin_", "head"),
    ("maxvit", "classifier.5"),
)
UNSUPPORTED = ("inception_v3", "googlenet", "squeezenet1_0", "squeezenet1_1")  # aux heads / conv heads


class WeightsUnavailableError(VehicleClsError, RuntimeError):
    """Pretrained weights could not be downloaded; the message says which file to put where."""


def supported_archs() -> list[str]:
    """torchvision classification models that ``create_model`` can give a new head."""
    import torchvision
    from torchvision.models import list_models

    return [
        m
        for m in list_models(module=torchvision.models)
        if m not in UNSUPPORTED and any(m.startswith(prefix) for prefix, _ in _HEAD_PATHS)
    ]


def _head_path_or_none(arch: str) -> str | None:
    import torchvision
    from torchvision.models import list_models

    if arch in UNSUPPORTED or arch not in list_models(module=torchvision.models):
        return None
    for prefix, path in _HEAD_PATHS:
        if arch.startswith(prefix):
            return path
    return None


def head_path(arch: str) -> str:
    """Dotted module path of the classification head (``fc`` for ResNets)."""
    path = _head_path_or_none(arch)
    if path is None:
        raise ValueError(f"unsupported classifier architecture {arch!r}; choose one of {supported_archs()}")
    return path


def get_head(model: nn.Module, arch: str) -> nn.Linear:
    """The Linear layer that produces the class logits."""
    head = model.get_submodule(head_path(arch))
    if isinstance(head, nn.Sequential):
        head = head[-1]
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{arch}: expected a Linear head at {head_path(arch)!r}, found {type(head).__name__}")
    return head


def replace_head(model: nn.Module, arch: str, num_classes: int, dropout: float) -> nn.Module:
    """Put ``Sequential(Dropout(dropout), Linear(in, num_classes))`` where the final Linear was.

    A Dropout directly before the old Linear becomes Identity so that only one dropout acts.
    """
    path = head_path(arch)
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = parent.get_submodule(child)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{arch}: expected a Linear at {path!r}, found {type(old).__name__}")
    new = nn.Sequential(nn.Dropout(p=float(dropout)), nn.Linear(old.in_features, int(num_classes)))
    setattr(parent, child, new)
    if isinstance(parent, nn.Sequential) and child.isdigit() and int(child) > 0:
        before = str(int(child) - 1)
        if isinstance(parent.get_submodule(before), nn.Dropout):
            setattr(parent, before, nn.Identity())
    return model


def pretrained_weights_enum(arch: str, weights: str):  # -> torchvision WeightsEnum member
    """torchvision weights for ``arch``: "imagenet" = the recommended (DEFAULT) ImageNet weights."""
    from torchvision.models import get_model_weights

    try:
        enum = get_model_weights(arch)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"torchvision has no pretrained weights for {arch!r}") from exc
    key = "DEFAULT" if weights.lower() == "imagenet" else weights
    try:
        return enum[key]
    except KeyError:
        names = [w.name for w in enum]
        raise ValueError(f"unknown weights {weights!r} for {arch}; use 'imagenet' or one of {names}") from None


def weights_cache_path(url: str) -> Path:
    """Where the ImageNet weights at ``url`` are cached: the one vehicle_cls weights cache
    (``$VEHICLE_CLS_HOME``), the same file ``vehicle-cls download --list`` reports."""
    from vehicle_cls.weights import cached_path

    return cached_path(_registry_name(url))


def _registry_name(url: str) -> str:
    """The ``weights.KNOWN_WEIGHTS`` name for ``url`` (its checksum is then verified), else the URL."""
    from vehicle_cls.weights import KNOWN_WEIGHTS

    return next((name for name, info in KNOWN_WEIGHTS.items() if info.url == url), url)


def load_pretrained_state(url: str, arch: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """State dict from the weights cache, downloading (atomically, checksum-verified) when missing."""
    from vehicle_cls.weights import WeightsError, fetch_weights

    try:
        path = fetch_weights(_registry_name(url), progress=progress)
    except WeightsError as exc:
        raise WeightsUnavailableError(f"cannot get ImageNet weights for {arch}: {exc}; or use weights=None") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the file is there but unreadable: not a network problem
        raise WeightsUnavailableError(
            f"cannot read cached {arch} weights {path} ({type(exc).__name__}: {exc}); delete it and fetch {url} again"
        ) from exc


def create_model(
    arch: str = "resnet50",
    num_classes: int = 1000,
    weights: str | None = None,
    dropout: float = 0.2,
    progress: bool = True,
) -> nn.Module:
    """A torchvision backbone by name, optionally ImageNet-initialised, with a new classes head."""
    from torchvision.models import get_model

    head_path(arch)  # fail early on unsupported names
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, not {num_classes}")
    if weights is None:
        model = get_model(arch, weights=None)
    else:
        w = pretrained_weights_enum(arch, weights)
        model = get_model(arch, weights=None, num_classes=len(w.meta["categories"]))
        model.load_state_dict(load_pretrained_state(w.url, arch, progress=progress))
    return replace_head(model, arch, num_classes, dropout)
