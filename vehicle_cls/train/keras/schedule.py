"""The Keras optimizer of a recipe and its per-step learning rate (the torch trainer's ``lr_factor``).

SGD (momentum, Nesterov) or AdamW; ``optim.weight_decay`` is Keras' decoupled decay, not applied to
variables of rank <= 1 (norm scales/offsets and biases, as in the torch trainer's groups);
``optim.grad_clip`` is ``global_clipnorm``. The optimizer is built over every variable once, so the
frozen head-only phase and the full phase share its state (and one resume point).
"""

from __future__ import annotations

from typing import Any

from vehicle_cls.train.config import ConfigError, TrainConfig
from vehicle_cls.train.optim import lr_factor


def check_supported(cfg: TrainConfig, source: str = "recipe") -> None:
    """One-line ConfigError for optimizer settings Keras cannot honour."""
    if cfg.optim.backbone_lr_factor != 1.0:
        raise ConfigError(
            f"{source}: optim.backbone_lr_factor: per-group learning rates are not supported with "
            f"model.backend=keras; use 1.0, got {cfg.optim.backbone_lr_factor!r}"
        )


def build_optimizer(cfg: TrainConfig, variables: list[Any], precision: str) -> Any:
    """The recipe's optimizer, built over ``variables`` (fp16: wrapped in a LossScaleOptimizer)."""
    from vehicle_cls.classifier.keras.loading import import_keras

    keras = import_keras()
    o = cfg.optim
    common = {"learning_rate": o.lr, "global_clipnorm": o.grad_clip}
    if o.name == "sgd":
        opt = keras.optimizers.SGD(
            momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay or None, **common
        )
    else:
        opt = keras.optimizers.AdamW(beta_1=o.betas[0], beta_2=o.betas[1], weight_decay=o.weight_decay, **common)
    if o.weight_decay:
        opt.exclude_from_weight_decay(var_list=[v for v in variables if len(v.shape) <= 1])
    if precision == "fp16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    opt.build(variables)
    return opt


class StepSchedule:
    """Learning rate at a global step: linear warm-up then cosine/constant over ``run.epochs``."""

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int):
        o = cfg.optim
        self.base = o.lr
        self.total = cfg.run.epochs * steps_per_epoch
        self.warmup = round(o.warmup_epochs * steps_per_epoch)
        self.args = (o.warmup_start_factor, o.schedule, o.min_lr_factor)

    def __call__(self, step: int) -> float:
        return self.base * lr_factor(step, self.total, self.warmup, *self.args)
