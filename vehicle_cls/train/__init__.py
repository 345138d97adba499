"""Training and evaluation: recipes (``config``), augmentation, the loop, metrics, reports, the demo.

``from vehicle_cls.train import load_config, train`` is the programmatic form of
``vehicle-cls train --config recipe.yaml``; ``vehicle_cls.train.evaluate.evaluate`` + ``write_report`` are
``vehicle-cls eval``.
"""

from __future__ import annotations

from typing import Any

from vehicle_cls.lazy import lazy_attribute

_PUBLIC = {
    "TrainConfig": "vehicle_cls.train.config",
    "ConfigError": "vehicle_cls.train.config",
    "load_config": "vehicle_cls.train.config",
    "train": "vehicle_cls.train.trainer",
    "Trainer": "vehicle_cls.train.trainer",
    "TrainResult": "vehicle_cls.train.trainer",
    "DataSplits": "vehicle_cls.train.splits",
    "prepare_splits": "vehicle_cls.train.splits",
    "compute_metrics": "vehicle_cls.train.metrics",
    "EvalResult": "vehicle_cls.train.evaluate",
    "write_report": "vehicle_cls.train.report",
    "write_comparison": "vehicle_cls.train.report",
}

__all__ = [
    "ConfigError",
    "DataSplits",
    "EvalResult",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "compute_metrics",
    "load_config",
    "prepare_splits",
    "train",
    "write_comparison",
    "write_report",
]


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _PUBLIC, name)
