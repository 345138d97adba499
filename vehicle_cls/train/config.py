"""Training recipe: dataclasses, YAML loading with one-line errors, and ``key=value`` overrides.

A recipe is a YAML mapping with the sections ``data``, ``model``, ``optim``, ``augment`` and
``run``; every key is checked against the dataclass fields, so a typo is an error that names the
file and the key instead of a silently ignored setting.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from vehicle_cls.errors import VehicleClsError
from vehicle_cls.fromdict import check_keys, field_names
from vehicle_cls.recipes import find_recipe, resolve_data_path


class ConfigError(VehicleClsError, ValueError):
    """A recipe problem, as one line naming the file (or override) and the key."""


@dataclass
class DataConfig:
    """Where the images come from and how they are split (test is never used for model selection)."""

    train: str = ""  # dataset path or URI (class folders, Kaggle layout, devkit, CSV, s3://...)
    layout: str = "auto"
    test: str | None = None  # separate test set; None -> carve ``test_fraction`` out of ``train``
    test_fraction: float = 0.0
    val_fraction: float = 0.1  # validation carved (stratified) from train, for model selection
    split_seed: int = 0
    crop: str = "none"  # "none" | "gt" (annotation boxes) | path of a crop cache made by `vehicle-cls crop`
    num_workers: int = 2
    max_per_class: int | None = None  # cap training images per class (quick experiments)


@dataclass
class ModelConfig:
    """The classifier to build, and its inference preprocessing (saved with the bundle)."""

    arch: str = "resnet50"
    backend: Literal["torch", "keras"] = "torch"  # keras: vehicle_cls.train.keras (keras.applications arches)
    weights: str | None = None  # None (from scratch) or "imagenet"
    dropout: float = 0.2
    input_size: int = 224
    resize: Literal["squash", "center_crop", "letterbox"] = "squash"
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    crop_fraction: float = 0.875


@dataclass
class OptimConfig:
    """Optimizer, learning-rate schedule and loss settings."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01  # for the global batch size
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4  # not applied to norm layers and biases
    warmup_epochs: float = 1.0  # linear warmup from warmup_start_factor * lr
    warmup_start_factor: float = 0.01
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_factor: float = 0.0  # cosine ends at min_lr_factor * lr
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    backbone_lr_factor: float = 1.0  # lr multiplier for everything except the head


@dataclass
class AugmentConfig:
    """Training-time augmentation (torchvision.transforms.v2); evaluation uses the inference preprocessing."""

    enabled: bool = True  # False: train on the inference preprocessing (the seed's setup)
    scale: tuple[float, float] = (0.08, 1.0)  # RandomResizedCrop area range
    ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    hflip: float = 0.5
    rotation: float = 0.0  # degrees
    color_jitter: float = 0.0  # brightness/contrast/saturation strength; hue = strength / 4
    auto: Literal["none", "trivial", "randaugment"] = "none"
    randaugment_ops: int = 2
    randaugment_magnitude: int = 9
    random_erasing: float = 0.0  # probability
    mixup_alpha: float = 0.0  # 0 = off
    cutmix_alpha: float = 0.0  # 0 = off


@dataclass
class RunConfig:
    """Loop settings: epochs, batch, precision, checkpoints, logging, devices."""

    out_dir: str = "runs/default"
    epochs: int = 30
    batch_size: int = 32  # global; split evenly over DDP ranks
    eval_batch_size: int = 64
    max_steps: int | None = None  # stop after this many optimizer steps in total (tests, smoke runs)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CPU, fp16 on CUDA
    channels_last: bool = True
    freeze_backbone_epochs: int = 0  # train only the head for the first N epochs
    early_stopping_patience: int = 0  # 0 = off; epochs without val improvement before stopping
    monitor: Literal["val_top1", "val_loss"] = "val_top1"
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on CUDA)
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1"
    threads: int | None = None  # torch.set_num_threads on CPU
    tensorboard: bool = True
    progress: bool = True  # tqdm bar (also off when stderr is not a terminal)
    log_every: int = 10  # steps between TensorBoard scalar writes
    max_nonfinite_steps: int = 5  # stop after this many steps in a row with a NaN/inf loss (each is skipped)


@dataclass
class TrainConfig:
    """A full training recipe."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready values (tuples as lists)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> TrainConfig:
        """Build and validate; errors name ``source`` and the dotted key."""
        return _build(cls, d, source, prefix="")

    def validate(self, source: str = "<config>") -> TrainConfig:
        """Check value ranges that types alone cannot express (and that no number is infinite or NaN)."""
        for key, value in _numbers(self.to_dict()):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{source}: {key}: must be a finite number, got {value!r}")
        checks = [
            ("data.train", bool(self.data.train), "is required (a dataset path or URI)"),
            ("data.val_fraction", 0.0 <= self.data.val_fraction < 1.0, "must be in [0, 1)"),
            ("data.test_fraction", 0.0 <= self.data.test_fraction < 1.0, "must be in [0, 1)"),
            ("data.num_workers", self.data.num_workers >= 0, "must be >= 0"),
            ("model.dropout", 0.0 <= self.model.dropout < 1.0, "must be in [0, 1)"),
            ("model.input_size", self.model.input_size >= 8, "must be >= 8"),
            ("model.weights", self.model.weights in (None, "imagenet"), "must be null or 'imagenet'"),
            ("optim.lr", self.optim.lr > 0, "must be > 0"),
            ("optim.weight_decay", self.optim.weight_decay >= 0, "must be >= 0"),
            ("optim.warmup_epochs", self.optim.warmup_epochs >= 0, "must be >= 0"),
            ("optim.label_smoothing", 0.0 <= self.optim.label_smoothing < 1.0, "must be in [0, 1)"),
            ("augment.scale", 0 < self.augment.scale[0] <= self.augment.scale[1] <= 1, "must be 0 < lo <= hi <= 1"),
            ("augment.ratio", 0 < self.augment.ratio[0] <= self.augment.ratio[1], "must be 0 < lo <= hi"),
            ("augment.hflip", 0.0 <= self.augment.hflip <= 1.0, "must be in [0, 1]"),
            ("augment.random_erasing", 0.0 <= self.augment.random_erasing <= 1.0, "must be in [0, 1]"),
            ("augment.mixup_alpha", self.augment.mixup_alpha >= 0, "must be >= 0"),
            ("augment.cutmix_alpha", self.augment.cutmix_alpha >= 0, "must be >= 0"),
            ("run.epochs", self.run.epochs >= 1, "must be >= 1"),
            ("run.batch_size", self.run.batch_size >= 1, "must be >= 1"),
            ("run.eval_batch_size", self.run.eval_batch_size >= 1, "must be >= 1"),
            ("run.max_steps", self.run.max_steps is None or self.run.max_steps >= 1, "must be null or >= 1"),
            ("run.freeze_backbone_epochs", self.run.freeze_backbone_epochs >= 0, "must be >= 0"),
            ("run.early_stopping_patience", self.run.early_stopping_patience >= 0, "must be >= 0"),
            ("run.max_nonfinite_steps", self.run.max_nonfinite_steps >= 1, "must be >= 1"),
        ]
        for key, ok, why in checks:
            if not ok:
                value = _get_dotted(self, key)
                raise ConfigError(f"{source}: {key}: {why}, got {value!r}")
        return self


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML recipe, apply ``section.key=value`` overrides, validate.

    Args:
        path: the recipe file, or a shipped recipe's name (``vehicle-cls recipes`` lists them).
        overrides: ``section.key=value`` strings, values parsed as YAML (``optim.lr=0.01``).

    Returns:
        The validated recipe; ``package:`` data paths resolved inside the installed package.

    Raises:
        ConfigError: any problem (unreadable file, malformed YAML, unknown key, bad value), as one line
            naming the file and the key.
    """
    try:
        path = find_recipe(path)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read recipe ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                          "save the recipe as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        raw = apply_override(raw, item)
    cfg = TrainConfig.from_dict(raw, source=str(path))
    for key in ("train", "test", "crop"):  # package:... -> inside the installed package (shipped recipes)
        setattr(cfg.data, key, resolve_data_path(getattr(cfg.data, key)))
    return cfg.validate(source=str(path))


def apply_override(raw: dict[str, Any], item: str) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``a.b=value`` set; the value is parsed as YAML (``0.01``, ``[1, 2]``, ``null``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value")
    key, _, text = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {item!r}: key must be section.key (e.g. optim.lr=0.01)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    section = out.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise ConfigError(f"override {item!r}: section {parts[0]!r} is not a mapping")
    section[parts[1]] = value
    return out


class _DuplicateKey(yaml.YAMLError):
    """The same key twice in one mapping (YAML keeps the last one silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in the same mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise _DuplicateKey(f"line {line}: duplicate key {key!r} (first given on line {seen[key]}); "
                                    "YAML would silently keep only the last one")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


# --- building dataclasses from plain values, with errors that name the key -------------------------

def _build(cls: type, d: Any, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if not isinstance(d, Mapping):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {_short(d)}")
    hints = typing.get_type_hints(cls)
    check_keys(d, field_names(cls), source=source, prefix=prefix, error=ConfigError)
    kwargs = {key: _coerce(hints[key], value, source, f"{prefix}{key}") for key, value in d.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert (int -> float, list -> tuple)."""
    if isinstance(value, float) and not math.isfinite(value):  # .inf / .nan: never a usable setting
        raise ConfigError(f"{source}: {key}: must be a finite number, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, source, key + ".")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{source}: {key}: expected {_describe(tp)}, got {_short(value)}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, source, key)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(f"{source}: {key}: must be one of {', '.join(map(repr, args))}, got {_short(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(a, v, source, key) for a, v in zip(args, value))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(args[0], v, source, key) for v in value] if args else list(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is Any:
        return value
    raise bad  # pragma: no cover - an annotation this loader does not know


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        plural = {float: "numbers", int: "integers", str: "strings", bool: "booleans"}.get(args[0], "values")
        return f"a list of {len(args)} {plural}"
    if origin is list:
        return "a list"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _numbers(d: Mapping[str, Any], prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from _numbers(v, f"{prefix}{k}.")
        elif isinstance(v, list):
            yield from ((f"{prefix}{k}", x) for x in v)
        else:
            yield f"{prefix}{k}", v


def _get_dotted(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg
