"""A classifier bundle on disk: ``model.safetensors`` + ``config.json`` (all one needs to predict).

``config.json`` holds the format version, the backend ("torch" here; "keras" bundles are written by
``classifier.keras``), the architecture, the class names, the exact preprocessing, the cropper
settings (or null) and a training summary. Reading checks the weights against the config and
refuses a mismatch with a message that names what differs.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from vehicle_cls.errors import VehicleClsError
from vehicle_cls.fileio import atomic_directory
from vehicle_cls.statedict import fit_report, key_list

BUNDLE_FORMAT = "vehicle_cls.classifier"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
REQUIRED_KEYS = ("classes",)
TORCH_REQUIRED_KEYS = ("format_version", "arch", "preprocess")


class BundleError(VehicleClsError, ValueError):
    """A bundle directory is missing, malformed, or its weights do not fit its config."""


def make_config(
    *,
    backend: str,
    classes: list[str],
    preprocess: dict[str, Any],
    arch: str | None = None,
    dropout: float | None = None,
    cropper: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` content of a bundle."""
    from vehicle_cls import __version__

    config: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": backend,
        "arch": arch,
        "num_classes": len(classes),
        "classes": list(classes),
        "dropout": dropout,
        "preprocess": preprocess,
        "cropper": cropper,
        "training": training,
        "weights": WEIGHTS_NAME if backend == "torch" else None,
        "vehicle_cls_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    config.update(extra or {})
    return config


def write_torch_bundle(directory: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], config: dict) -> Path:
    """Write weights (safetensors, contiguous CPU tensors) and ``config.json`` as one directory swap, so a
    kill never pairs the weights of one save with the config of another (other files there are kept)."""
    from safetensors.torch import save

    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    metadata = {"format": "pt", "arch": str(config.get("arch")), "num_classes": str(config["num_classes"])}
    with atomic_directory(directory) as tmp:
        (tmp / WEIGHTS_NAME).write_bytes(save(tensors, metadata=metadata))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return directory


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Parse and validate ``config.json`` of a bundle; ``BundleError`` names the problem."""
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise BundleError(f"{directory}: no such model directory (a bundle written by Classifier.save)")
    if not path.is_file():
        raise BundleError(f"{directory}: not a model bundle ({CONFIG_NAME} missing)")
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if not isinstance(config, dict):
        raise BundleError(f"{path}: expected a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if config.get("backend", "torch") == "torch":
        missing += [k for k in TORCH_REQUIRED_KEYS if k not in config]
    if missing:
        raise BundleError(f"{path}: missing {', '.join(missing)}")
    version = config.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format version {version!r} is newer than this vehicle_cls reads "
            f"({FORMAT_VERSION}); upgrade vehicle_cls"
        )
    classes = config["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise BundleError(f"{path}: 'classes' must be a non-empty list of class names")
    if len(set(classes)) != len(classes):
        raise BundleError(f"{path}: 'classes' has duplicate names")
    if config.get("num_classes", len(classes)) != len(classes):
        raise BundleError(f"{path}: num_classes is {config['num_classes']} but {len(classes)} classes are listed")
    return config


def read_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` on the CPU."""
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise BundleError(f"{Path(directory)}: weights file {WEIGHTS_NAME} missing")
    try:
        return load_file(path, device="cpu")
    except Exception as exc:
        raise BundleError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None


def check_weights_fit(
    expected: Mapping[str, torch.Tensor],
    loaded: Mapping[str, torch.Tensor],
    *,
    head_weight_key: str,
    num_classes: int,
    arch: str,
    where: str,
) -> None:
    """Raise ``BundleError`` listing every way ``loaded`` differs from the model the config describes.

    Dtype rule: a floating tensor of another float type (fp16, bf16, fp64) is cast to the model's type
    when loaded; a tensor of another kind (int8 where the model has floats, floats for an integer
    counter, bool, complex) is refused, since casting it would silently change what it means.
    """
    problems = []
    head = loaded.get(head_weight_key)
    if head is not None and head.ndim == 2 and head.shape[0] != num_classes:
        problems.append(f"head has {head.shape[0]} outputs but config lists {num_classes} classes")
    report = fit_report(expected, loaded)
    missing, unexpected = sorted(report.missing), sorted(report.unexpected)
    if missing:
        problems.append(f"missing from the weights: {key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected in the weights: {key_list(unexpected)}")
    reported = set()
    if problems:  # the head mismatch is already said; do not repeat its weight and bias
        reported = {head_weight_key, head_weight_key[: -len("weight")] + "bias"}
    mismatched = [f"{k} is {got} but {arch} needs {needed}"
                  for k, got, needed in report.shape_mismatch if k not in reported]
    wrong_kind = [f"{k} is {got} but {arch} needs {needed}" for k, got, needed in report.dtype_mismatch]
    if wrong_kind:
        problems.append("dtype mismatch: " + "; ".join(wrong_kind[:5]) + (
            f" ({len(wrong_kind)} in all)" if len(wrong_kind) > 5 else ""))
    if mismatched:
        problems.append("shape mismatch: " + "; ".join(mismatched[:5]) + (
            f" ({len(mismatched)} in all)" if len(mismatched) > 5 else ""))
    if (missing or unexpected) and len(missing) + len(unexpected) > 10:
        problems.append(f"the weights look like a different architecture than config's arch {arch!r}")
    if problems:
        raise BundleError(f"{where}: weights do not fit config.json: " + "; ".join(problems))
