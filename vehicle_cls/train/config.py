"""Training recipe: dataclasses, YAML loading with one-line errors, and ``key=value`` overrides.

A recipe is a YAML mapping with the sections ``data``, ``model``, ``optim``, ``augment`` and
``run``; every key is checked against the dataclass fields, so a typo is an error that names the
file and the key instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from vehicle_cls.errors import VehicleClsError
from vehicle_cls.fromdict import strict_from_dict
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
    # the layout reader's own arguments, for train and test: coco {per, categories, images_dir},
    # csv {path_column, label_column, box_columns, split_column, delimiter, ...}
    layout_options: dict[str, Any] = field(default_factory=dict)


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
        """Plain JSON/YAML-ready values (tuples as lists), as a run's ``config.yaml`` records them.

        Returns:
            The sections and their keys.
        """
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "<dict>") -> TrainConfig:
        """Build from a mapping of sections, checking every key; errors name ``source`` and the dotted key.

        Args:
            d: the sections (``data``, ``model``, ``optim``, ``augment``, ``run``); missing keys keep
                their defaults.
            source: where ``d`` came from, for the error message.

        Returns:
            The recipe (not yet range-checked: see ``validate``).

        Raises:
            ConfigError: ``d`` is not a mapping, or has an unknown key or a value of the wrong type.
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: top level: expected a mapping, got {type(d).__name__}")
        return strict_from_dict(cls, d, source=source, error=ConfigError)

    def validate(self, source: str = "<config>") -> TrainConfig:
        """Check value ranges that types alone cannot express (and that no number is infinite or NaN).

        Args:
            source: where the recipe came from, for the error message.

        Returns:
            This recipe, unchanged.

        Raises:
            ConfigError: the first value out of range, naming ``source`` and the dotted key.
        """
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
            ("optim.momentum", 0.0 <= self.optim.momentum < 1.0, "must be in [0, 1)"),
            ("optim.betas", all(0.0 <= b < 1.0 for b in self.optim.betas), "must be two values in [0, 1)"),
            ("optim.warmup_start_factor", 0.0 < self.optim.warmup_start_factor <= 1.0, "must be in (0, 1]"),
            ("optim.min_lr_factor", 0.0 <= self.optim.min_lr_factor <= 1.0, "must be in [0, 1]"),
            (
                "optim.grad_clip",
                self.optim.grad_clip is None or self.optim.grad_clip > 0,
                "must be null (off) or > 0 (a negative clip flips every gradient)",
            ),
            ("optim.backbone_lr_factor", self.optim.backbone_lr_factor >= 0, "must be >= 0"),
            ("augment.scale", 0 < self.augment.scale[0] <= self.augment.scale[1] <= 1, "must be 0 < lo <= hi <= 1"),
            ("augment.ratio", 0 < self.augment.ratio[0] <= self.augment.ratio[1], "must be 0 < lo <= hi"),
            ("augment.hflip", 0.0 <= self.augment.hflip <= 1.0, "must be in [0, 1]"),
            ("augment.random_erasing", 0.0 <= self.augment.random_erasing <= 1.0, "must be in [0, 1]"),
            ("augment.rotation", self.augment.rotation >= 0, "must be >= 0 (degrees)"),
            ("augment.color_jitter", self.augment.color_jitter >= 0, "must be >= 0"),
            ("augment.randaugment_ops", self.augment.randaugment_ops >= 0, "must be >= 0"),
            ("augment.mixup_alpha", self.augment.mixup_alpha >= 0, "must be >= 0"),
            ("augment.cutmix_alpha", self.augment.cutmix_alpha >= 0, "must be >= 0"),
            ("run.epochs", self.run.epochs >= 1, "must be >= 1"),
            ("run.batch_size", self.run.batch_size >= 1, "must be >= 1"),
            ("run.eval_batch_size", self.run.eval_batch_size >= 1, "must be >= 1"),
            ("run.max_steps", self.run.max_steps is None or self.run.max_steps >= 1, "must be null or >= 1"),
            ("run.freeze_backbone_epochs", self.run.freeze_backbone_epochs >= 0, "must be >= 0"),
            ("run.early_stopping_patience", self.run.early_stopping_patience >= 0, "must be >= 0"),
            ("run.max_nonfinite_steps", self.run.max_nonfinite_steps >= 1, "must be >= 1"),
            (
                "run.threads",
                self.run.threads is None or self.run.threads >= 1,
                "must be null (torch's default) or >= 1",
            ),
            ("run.log_every", self.run.log_every >= 1, "must be >= 1"),
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
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save the recipe as UTF-8"
        ) from None
    try:
        raw = _load_yaml(text)
    except _RefusedYaml as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (a recipe is a few levels of sections and keys)") from None
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


MAX_YAML_VALUES = 100_000  # values a recipe may expand to, aliases counted at each use (a recipe has ~100)
MAX_YAML_DEPTH = 50


class _RefusedYaml(yaml.YAMLError):
    """The same key twice in one mapping (YAML keeps the last one silently), or a document whose aliases
    expand beyond ``MAX_YAML_VALUES`` values or ``MAX_YAML_DEPTH`` levels (an alias bomb)."""


def _load_yaml(text: str) -> Any:
    """``text`` parsed by ``_UniqueKeyLoader``, refused before construction when it is too big once its
    aliases are expanded (a 1.5 KB alias bomb would otherwise take minutes and gigabytes downstream)."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node) -> None:
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:  # values once aliases are expanded, memoised per node
        if depth > MAX_YAML_DEPTH:
            raise _RefusedYaml(f"line {node.start_mark.line + 1}: nested more than {MAX_YAML_DEPTH} levels deep")
        if id(node) in sizes:
            return sizes[id(node)]
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > MAX_YAML_VALUES:
            raise _RefusedYaml(
                f"expands to more than {MAX_YAML_VALUES} values once its aliases (*name) are "
                "expanded; refusing it (an alias bomb?)"
            )
        sizes[id(node)] = total
        return total

    size(root, 0)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in the same mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise _RefusedYaml(
                    f"line {line}: duplicate key {key!r} (first given on line {seen[key]}); "
                    "YAML would silently keep only the last one"
                )
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


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
