"""The bundle: one directory with all that ``Classifier.load`` and ``Pipeline.load`` need, described by
its ``config.json``. This module owns the directory and that file, and nothing else reads or writes it.

Each contributor hands in a ``BundlePart``: the classifier backend (torch, Keras) its top-level entries
(backend, arch, classes, preprocessing, weights file name, ...) and its weights, the cropper its
``"cropper"`` section and its detector weights (``Pipeline``). ``write_bundle`` writes every file and
``config.json`` in one ``fileio.atomic_directory`` swap, so a kill at any point leaves the previous
bundle whole, never a config naming a file of another save. ``read_config`` parses and validates
``config.json`` (one place). It imports no model package: the classifier and the pipeline both use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vehicle_cls.errors import VehicleClsError
from vehicle_cls.fileio import atomic_directory

BUNDLE_FORMAT = "vehicle_cls.classifier"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
REQUIRED_KEYS = ("classes",)
TORCH_REQUIRED_KEYS = ("format_version", "arch", "preprocess")  # a torch bundle cannot be rebuilt without

FileWriter = Callable[[Path], Any]  # writes one file at the path it is given


class BundleError(VehicleClsError, ValueError):
    """A bundle directory is missing, malformed, or its weights do not fit its config."""


@dataclass
class BundlePart:
    """One contributor's share of a bundle: its ``config.json`` entries and its files (path inside the
    bundle -> a function that writes the file at the path it is given, inside the new directory)."""

    config: dict[str, Any]
    files: dict[str, FileWriter] = field(default_factory=dict)


def write_bundle(
    directory: str | os.PathLike,
    classifier: BundlePart,
    *,
    cropper: BundlePart | None = None,
    training: dict[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Path:
    """Write the bundle: ``classifier``'s entries at the top of ``config.json``, ``cropper``'s as its
    ``"cropper"`` section (null: none), the ``training`` summary, and all their files, as one directory
    swap. ``base``: entries of an earlier config kept where this save does not set them. Files of the
    old directory that this save does not write are carried over (``atomic_directory``)."""
    directory = Path(directory)
    config = _config(classifier.config, None if cropper is None else cropper.config, training, base)
    files = dict(classifier.files)
    for name, write in (cropper.files if cropper is not None else {}).items():
        if name in files or name == CONFIG_NAME:
            raise ValueError(f"{directory}: two parts of the bundle write {name}")
        files[name] = write
    with atomic_directory(directory) as tmp:
        for name, write in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return directory


def _config(
    classifier: Mapping[str, Any],
    cropper: Mapping[str, Any] | None,
    training: dict[str, Any] | None,
    base: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``config.json`` content: format, the classifier's entries, cropper, training, provenance."""
    from vehicle_cls import __version__

    classes = list(classifier.get("classes", []))
    config: dict[str, Any] = {
        **(base or {}),
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "num_classes": len(classes),
        **classifier,
        "cropper": None if cropper is None else dict(cropper),
        "training": training,
        "vehicle_cls_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return config


def read_config_if_any(directory: str | os.PathLike) -> dict[str, Any]:
    """An existing ``config.json`` as written (no validation), or {} where there is none yet."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); remove it or choose another directory") from exc
    return data if isinstance(data, dict) else {}


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
    except RecursionError:
        raise BundleError(f"{path}: nested too deeply to be a bundle config") from None
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
    blank = [i for i, c in enumerate(classes) if not c.strip()]
    if blank:
        raise BundleError(f"{path}: 'classes' has an empty name at position {blank[0]} (every class needs a name)")
    if len(set(classes)) != len(classes):
        raise BundleError(f"{path}: 'classes' has duplicate names")
    if config.get("num_classes", len(classes)) != len(classes):
        raise BundleError(f"{path}: num_classes is {config['num_classes']} but {len(classes)} classes are listed")
    return config


def bundle_path(directory: str | os.PathLike, name: str) -> str:
    """A file named in ``config.json``: a relative path is resolved inside the bundle (so the bundle can
    be moved), an absolute one is returned as is."""
    if not name or os.path.isabs(name):
        return name
    return str((Path(directory) / name).resolve())
