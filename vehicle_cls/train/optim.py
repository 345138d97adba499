"""Optimizer and learning-rate schedule: parameter groups (no decay on norms and biases, a backbone
lr factor), SGD/AdamW, linear warmup then cosine or constant."""

from __future__ import annotations

import math

import torch
from torch import nn

from vehicle_cls.train.config import TrainConfig


def head_module(model: nn.Module, arch: str) -> nn.Module:
    """The classification head (``fc`` for ResNets) as named by the classifier factory."""
    from vehicle_cls.classifier.factory import head_path

    return model.get_submodule(head_path(arch))


def param_groups(
    model: nn.Module, head: nn.Module, lr: float, weight_decay: float, backbone_lr_factor: float
) -> list[dict]:
    """Four groups (backbone/head x decay/no-decay); norm weights and biases (ndim <= 1) get no decay."""
    head_ids = {id(p) for p in head.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(h, d): [] for h in (False, True) for d in (False, True)}
    for p in model.parameters():
        groups[(id(p) in head_ids, p.ndim > 1)].append(p)
    out = []
    for (is_head, decay), params in groups.items():
        if params:
            out.append(
                {
                    "params": params,
                    "lr": lr * (1.0 if is_head else backbone_lr_factor),
                    "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{'head' if is_head else 'backbone'}{'' if decay else '_no_decay'}",
                }
            )
    return out


def build_optimizer(cfg: TrainConfig, model: nn.Module, head: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over ``param_groups``."""
    o = cfg.optim
    groups = param_groups(model, head, o.lr, o.weight_decay, o.backbone_lr_factor)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
    return torch.optim.AdamW(groups, lr=o.lr, betas=(float(o.betas[0]), float(o.betas[1])))


def lr_factor(
    step: int, total_steps: int, warmup_steps: int, start_factor: float, schedule: str, min_factor: float
) -> float:
    """Multiplier of the base lr at ``step``: linear warmup, then cosine (or constant) decay."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step ``lr_factor`` schedule over ``run.epochs`` epochs."""
    o = cfg.optim
    total = cfg.run.epochs * steps_per_epoch
    warmup = round(o.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, warmup, o.warmup_start_factor, o.schedule, o.min_lr_factor)
    )
