"""The training loop: mixed precision, channels_last, warmup + cosine, checkpoints, exact resume, DDP.

A run directory holds ``config.yaml`` (the resolved recipe), ``splits.json`` (which image went
where), ``last.pt`` (everything needed to resume: model, optimizer, scheduler, scaler, epoch,
step, RNG states, best metric, history), ``best/`` (a classifier bundle, ``Classifier.save``, that
``Classifier.load`` and ``Pipeline.load`` open), ``history.json`` and ``tb/`` (TensorBoard).

Determinism: the sampler is re-seeded from (seed, epoch) every epoch and the global RNG states are
restored on resume, so an interrupted and resumed run ends with the same weights as an
uninterrupted one (on the same device and thread count). Under ``torchrun`` each rank trains on a
disjoint shard (DistributedSampler), gradients are averaged (DDP; gloo on CPU, nccl on CUDA) and
only rank 0 writes files.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data.distributed import DistributedSampler

from vehicle_cls.fileio import atomic_write_text
from vehicle_cls.train.augment import build_batch_mix, build_eval_transform, build_train_transform
from vehicle_cls.train.config import TrainConfig
from vehicle_cls.train.splits import DataSplits, prepare_splits

logger = logging.getLogger(__name__)

LAST_NAME = "last.pt"
BEST_NAME = "best"


# --- distributed setup ------------------------------------------------------------------------------

@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (world_size 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    logger.info("DDP: rank %d/%d (local %d), backend %s", rank, world, local_rank, backend)
    return DistInfo(rank, world, local_rank, True)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's CUDA device when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CPU; bf16 on CUDA when supported, else fp16 (with a GradScaler)."""
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise ValueError("run.precision fp16 needs CUDA; use bf16 or fp32 on CPU")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" else "fp32"


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` without padding (evaluation: every sample counted once)."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.indices = list(range(rank, n, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# --- optimizer and schedule ---------------------------------------------------------------------------

def head_module(model: nn.Module, arch: str) -> nn.Module:
    """The classification head (``fc`` for ResNets) as named by the classifier factory."""
    from vehicle_cls.classifier.factory import head_path

    return model.get_submodule(head_path(arch))


def param_groups(model: nn.Module, head: nn.Module, lr: float, weight_decay: float, backbone_lr_factor: float) -> list[dict]:
    """Four groups (backbone/head x decay/no-decay); norm weights and biases (ndim <= 1) get no decay."""
    head_ids = {id(p) for p in head.parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(h, d): [] for h in (False, True) for d in (False, True)}
    for p in model.parameters():
        groups[(id(p) in head_ids, p.ndim > 1)].append(p)
    out = []
    for (is_head, decay), params in groups.items():
        if params:
            out.append({
                "params": params,
                "lr": lr * (1.0 if is_head else backbone_lr_factor),
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{'head' if is_head else 'backbone'}{'' if decay else '_no_decay'}",
            })
    return out


def build_optimizer(cfg: TrainConfig, model: nn.Module, head: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    groups = param_groups(model, head, o.lr, o.weight_decay, o.backbone_lr_factor)
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0)
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))


def lr_factor(step: int, total_steps: int, warmup_steps: int, start_factor: float, schedule: str, min_factor: float) -> float:
    """Multiplier of the base lr at ``step``: linear warmup, then cosine (or constant) decay."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- results -----------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What a ``fit`` produced; ``best_dir`` is a classifier bundle."""

    run_dir: Path
    best_dir: Path | None
    best_metric: float | None
    best_epoch: int | None
    epochs_completed: int
    global_step: int
    stopped_early: bool = False
    interrupted: bool = False  # stopped by run.max_steps before the last epoch
    history: list[dict[str, Any]] = field(default_factory=list)


def rng_states(device: torch.device) -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"].cpu())
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# --- the trainer -------------------------------------------------------------------------------------

class Trainer:
    """Train a classifier from a ``TrainConfig``; inject ``classifier``/``splits`` to skip building them.

    ``on_batch(epoch, step, indices)`` (optional) is called for every training batch with the
    dataset indices this rank trained on (for logging, auditing and tests).
    """

    def __init__(self, cfg: TrainConfig, *, classifier: Any = None, splits: DataSplits | None = None,
                 on_batch: Callable[[int, int, torch.Tensor], None] | None = None):
        self.cfg = cfg
        self.classifier = classifier
        self.splits = splits
        self.on_batch = on_batch

    # ---- setup ------------------------------------------------------------------------------------
    def _setup(self, resume: bool) -> None:
        cfg = self.cfg
        self.device = resolve_device(cfg.run.device)
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled:
            self.device = resolve_device(cfg.run.device, self.dist.local_rank)
        self.precision = resolve_precision(cfg.run.precision, self.device)
        if cfg.run.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.run.threads)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.run_dir = Path(cfg.run.out_dir)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.run.seed)
        self._setup_splits(resume)
        self._setup_model()

    def _setup_splits(self, resume: bool) -> None:
        path = self.run_dir / "splits.json"
        if self.splits is None and resume and path.is_file():
            self.splits = DataSplits.load(path)
            logger.info("resume: reusing the splits of %s", path)
        if self.dist.is_main:
            if self.splits is None:
                self.splits = prepare_splits(self.cfg.data)
            self.splits.save(path)
            import yaml

            (self.run_dir / "config.yaml").write_text(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False), "utf-8")
        self._barrier()
        if self.splits is None:  # other ranks read what rank 0 decided
            self.splits = DataSplits.load(path)

    def _setup_model(self) -> None:
        cfg = self.cfg
        if self.classifier is None:
            from vehicle_cls.classifier import Classifier, Preprocess

            m = cfg.model
            pre = Preprocess(input_size=m.input_size, resize=m.resize, interpolation=m.interpolation,
                             crop_fraction=m.crop_fraction)
            self.classifier = Classifier.create(m.arch, classes=self.splits.classes, weights=m.weights,
                                                dropout=m.dropout, preprocess=pre, device="cpu")
        clf = self.classifier
        if list(clf.classes) != list(self.splits.classes):
            raise ValueError(f"classifier classes {clf.classes[:3]}... differ from the dataset's {self.splits.classes[:3]}...")
        clf.to(self.device)
        self.model: nn.Module = clf.model
        if cfg.run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            clf.model = self.model
        self.head = head_module(self.model, clf.arch)

    def _loaders(self) -> None:
        from vehicle_cls.data.torch_dataset import SampleDataset, collate_skip_bad

        cfg, d = self.cfg, self.dist
        crop = _crop_arg(cfg.data.crop)
        pre = self.classifier.preprocess
        train_ds = SampleDataset(self.splits.train, build_train_transform(cfg.augment, pre), crop,
                                 box_format=self.splits.box_format)
        val_ds = SampleDataset(self.splits.val, build_eval_transform(pre), crop, box_format=self.splits.box_format)
        if cfg.run.batch_size % d.world_size:
            raise ValueError(f"run.batch_size {cfg.run.batch_size} is not divisible by the {d.world_size} DDP ranks")
        self.local_batch = cfg.run.batch_size // d.world_size
        self.sampler = DistributedSampler(train_ds, num_replicas=d.world_size, rank=d.rank, shuffle=True,
                                          seed=cfg.run.seed, drop_last=False)
        self.loader_gen = torch.Generator()
        pin = self.device.type == "cuda"
        workers = cfg.data.num_workers
        self.train_loader = DataLoader(train_ds, batch_size=self.local_batch, sampler=self.sampler,
                                       num_workers=workers, collate_fn=collate_skip_bad, pin_memory=pin,
                                       generator=self.loader_gen, persistent_workers=False)
        self.val_loader = DataLoader(val_ds, batch_size=max(1, cfg.run.eval_batch_size // d.world_size),
                                     sampler=ShardSampler(len(val_ds), d.rank, d.world_size),
                                     num_workers=workers, collate_fn=collate_skip_bad, pin_memory=pin,
                                     generator=torch.Generator().manual_seed(0))
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError("the training split is empty")

    # ---- helpers ------------------------------------------------------------------------------------
    def _barrier(self) -> None:
        if self.dist.enabled:
            dist.barrier()

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _set_frozen(self, frozen: bool) -> None:
        head_ids = {id(p) for p in self.head.parameters()}
        for p in self.model.parameters():
            if id(p) not in head_ids:
                p.requires_grad_(not frozen)
        self._frozen = frozen

    def _wrap(self) -> nn.Module:
        if not self.dist.enabled:
            return self.model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.model, device_ids=ids)

    def _train_mode(self) -> None:
        self.model.train()
        if self._frozen:  # a frozen backbone keeps its BatchNorm statistics too
            head_modules = set(self.head.modules())
            for m in self.model.modules():
                if m not in head_modules and isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _reduce(self, values: list[float]) -> list[float]:
        if not self.dist.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.cfg.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    # ---- main ---------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train (or continue a run from ``last.pt`` with ``resume=True``) and return the result."""
        try:
            return self._fit(resume)
        finally:
            if getattr(self, "dist", None) is not None and self.dist.initialized_here and dist.is_initialized():
                dist.destroy_process_group()

    def _fit(self, resume: bool) -> TrainResult:
        cfg = self.cfg
        self._setup(resume)
        self._loaders()
        o, r = cfg.optim, cfg.run
        self.optimizer = build_optimizer(cfg, self.model, self.head)
        total = r.epochs * self.steps_per_epoch
        warmup = round(o.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, total, warmup, o.warmup_start_factor, o.schedule, o.min_lr_factor),
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
        self.mix = build_batch_mix(cfg.augment, len(self.splits.classes))
        start_epoch, step = 0, 0
        best, best_epoch, bad_epochs = None, None, 0
        history: list[dict[str, Any]] = []
        last = self.run_dir / LAST_NAME
        if not resume and last.is_file() and self.dist.is_main:
            logger.warning("%s exists; starting a new run over it (use --resume to continue it)", last)
        if resume:
            if not last.is_file():
                raise FileNotFoundError(f"{last}: no checkpoint to resume from (train without --resume first)")
            ckpt = torch.load(last, map_location=self.device, weights_only=False)
            _warn_config_changes(ckpt.get("config", {}), cfg.to_dict())
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            start_epoch, step = ckpt["epoch"], ckpt["step"]
            best, best_epoch, bad_epochs = ckpt["best_metric"], ckpt["best_epoch"], ckpt["bad_epochs"]
            history = ckpt["history"]
            set_rng_states(ckpt["rng"])
            logger.info("resumed %s at epoch %d (step %d)", last, start_epoch, step)
        writer = None
        if self.dist.is_main and r.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=step if resume else None)
        higher = r.monitor == "val_top1"
        stopped_early = interrupted = False
        self._frozen = False
        net: nn.Module | None = None
        epoch = start_epoch
        try:
            for epoch in range(start_epoch, r.epochs):
                frozen = epoch < r.freeze_backbone_epochs
                if net is None or frozen != self._frozen:
                    self._set_frozen(frozen)
                    net = self._wrap()
                    if frozen:
                        logger.info("epoch %d: backbone frozen (head only)", epoch + 1)
                t0 = time.perf_counter()
                train_stats, step, complete = self._train_epoch(net, epoch, step, writer)
                if not complete:
                    interrupted = True
                    logger.info("stopped at step %d (run.max_steps) inside epoch %d; last.pt holds epoch %d",
                                step, epoch + 1, epoch)
                    break
                val = self._validate()
                row = {"epoch": epoch + 1, "step": step, "lr": self.optimizer.param_groups[0]["lr"],
                       **train_stats, **val, "seconds": round(time.perf_counter() - t0, 3)}
                history.append(row)
                metric = val.get(r.monitor)
                improved = metric is not None and (best is None or (metric > best if higher else metric < best))
                if metric is None or improved:
                    best, best_epoch, bad_epochs = metric, epoch + 1, 0
                else:
                    bad_epochs += 1
                logger.info(_epoch_line(row, r.epochs, improved))
                if writer is not None:
                    for k, v in row.items():
                        if k not in ("epoch", "step") and isinstance(v, (int, float)):
                            writer.add_scalar(f"epoch/{k}", v, epoch + 1)
                    writer.flush()
                if self.dist.is_main:
                    if metric is None or improved:
                        self._save_best(epoch + 1, best, history)
                    atomic_torch_save({
                        "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                        "epoch": epoch + 1, "step": step, "rng": rng_states(self.device),
                        "best_metric": best, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                        "history": history, "config": cfg.to_dict(), "classes": self.splits.classes,
                    }, last)
                    atomic_write_text(self.run_dir / "history.json", json.dumps(history, indent=1) + "\n")
                self._barrier()
                if r.early_stopping_patience and bad_epochs >= r.early_stopping_patience:
                    stopped_early = True
                    logger.info("early stopping: no %s improvement for %d epochs (best %.4f at epoch %s)",
                                r.monitor, bad_epochs, best, best_epoch)
                    break
                if r.max_steps is not None and step >= r.max_steps:
                    interrupted = epoch + 1 < r.epochs
                    if interrupted:
                        logger.info("stopped at step %d (run.max_steps) after epoch %d", step, epoch + 1)
                    break
        finally:
            if writer is not None:
                writer.close()
        completed = len(history)
        best_dir = self.run_dir / BEST_NAME
        return TrainResult(self.run_dir, best_dir if best_dir.is_dir() else None, best, best_epoch,
                           completed, step, stopped_early, interrupted, history)

    def _train_epoch(self, net: nn.Module, epoch: int, step: int, writer: Any) -> tuple[dict[str, float], int, bool]:
        r = self.cfg.run
        self.sampler.set_epoch(epoch)
        self.loader_gen.manual_seed(r.seed * 1_000_003 + epoch)
        self._train_mode()
        loss_sum = correct = count = skipped = 0.0
        show = r.progress and self.dist.is_main and sys.stderr.isatty()
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{r.epochs}", leave=False, dynamic_ncols=True)
        complete = True
        batches = 0
        for batch in self.train_loader:
            if r.max_steps is not None and step >= r.max_steps:
                complete = False
                break
            images, labels, indices, failed = batch
            skipped += len(failed)
            if self.on_batch is not None:
                self.on_batch(epoch, step, indices)
            batches += 1
            if len(labels):
                images, labels = self._to_device(images), labels.to(self.device, non_blocking=True)
                targets = labels
                if self.mix is not None:
                    images, targets = self.mix(images, labels)
                with self._autocast():
                    logits = net(images)
                    loss = self.criterion(logits.float(), targets)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if self.cfg.optim.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                n = len(labels)
                loss_sum += float(loss.detach()) * n
                correct += float((logits.detach().argmax(1) == labels).sum())
                count += n
                if writer is not None and step % max(1, r.log_every) == 0:
                    writer.add_scalar("train/loss", float(loss.detach()), step)
                    writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], step)
            self.scheduler.step()
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / max(count, 1):.3f}")
        if bar is not None:
            bar.close()
        if batches < self.steps_per_epoch:
            complete = False
        loss_sum, correct, count, skipped = self._reduce([loss_sum, correct, count, skipped])
        stats = {"train_loss": loss_sum / max(count, 1), "train_top1": correct / max(count, 1), "train_skipped": int(skipped)}
        return stats, step, complete

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        if len(self.splits.val) == 0:
            return {}
        self.model.eval()
        loss_sum = c1 = c5 = count = skipped = 0.0
        k = min(5, len(self.splits.classes))
        for images, labels, _, failed in self.val_loader:
            skipped += len(failed)
            if not len(labels):
                continue
            images, labels = self._to_device(images), labels.to(self.device)
            with self._autocast():
                logits = self.model(images).float()
            loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            top = logits.topk(k, dim=1).indices
            c1 += float((top[:, 0] == labels).sum())
            c5 += float((top == labels[:, None]).any(1).sum())
            count += len(labels)
        loss_sum, c1, c5, count, skipped = self._reduce([loss_sum, c1, c5, count, skipped])
        if count == 0:
            return {"val_skipped": int(skipped)}
        return {"val_loss": loss_sum / count, "val_top1": c1 / count, "val_top5": c5 / count, "val_skipped": int(skipped)}

    def _save_best(self, epoch: int, metric: float | None, history: list[dict]) -> None:
        """Write the classifier bundle to ``best/`` (config.json carries the training summary)."""
        summary = {
            "epoch": epoch, "monitor": self.cfg.run.monitor, "best_metric": metric,
            "history": history, "recipe": self.cfg.to_dict(),
            "data": {"train": len(self.splits.train), "val": len(self.splits.val),
                     "test": None if self.splits.test is None else len(self.splits.test),
                     "dataset": self.cfg.data.train, "crop": self.cfg.data.crop},
            "precision": self.precision, "world_size": self.dist.world_size,
            "run_dir": str(self.run_dir),
        }
        was_training = self.model.training
        self.classifier.save(self.run_dir / BEST_NAME, training=summary)
        self.model.train(was_training)


def train(cfg: TrainConfig, *, resume: bool = False, classifier: Any = None, splits: DataSplits | None = None,
          on_batch: Callable[[int, int, torch.Tensor], None] | None = None) -> TrainResult:
    """Train per ``cfg`` (continue from ``out_dir/last.pt`` with ``resume``); see ``Trainer``."""
    return Trainer(cfg, classifier=classifier, splits=splits, on_batch=on_batch).fit(resume=resume)


def _crop_arg(crop: str) -> Any:
    if crop in ("none", "gt"):
        return crop
    from vehicle_cls.data import CropCache

    return CropCache(crop)


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f} top1 {row['train_top1']:.2%}"]
    if "val_top1" in row:
        parts.append(f"val loss {row['val_loss']:.4f} top1 {row['val_top1']:.2%} top5 {row['val_top5']:.2%}")
    parts.append(f"lr {row['lr']:.3g}")
    parts.append(f"{row['seconds']:.1f}s" + (" *" if improved else ""))
    return " | ".join(parts)


def _warn_config_changes(old: dict, new: dict) -> None:
    ignore = {("run", "max_steps"), ("run", "progress"), ("run", "tensorboard"), ("data", "num_workers"), ("run", "threads")}
    for section, values in new.items():
        for key, value in (values or {}).items():
            before = (old.get(section) or {}).get(key, value)
            if (section, key) not in ignore and before != value:
                logger.warning("resume: %s.%s changed from %r to %r", section, key, before, value)
