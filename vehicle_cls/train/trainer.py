"""The trainer: mixed precision, channels_last, frozen-backbone warm-up, early stopping, checkpoints,
exact resume, DDP.

A run directory holds ``config.yaml`` (the resolved recipe), ``splits.json`` (which image went
where), ``last.pt`` (everything needed to resume: model, optimizer, scheduler, scaler, epoch,
step, RNG states, best metric, history), ``best/`` (a classifier bundle, ``Classifier.save``, that
``Classifier.load`` and ``Pipeline.load`` open), ``history.json`` and ``tb/`` (TensorBoard).

Determinism: the sampler is re-seeded from (seed, epoch) every epoch and the global RNG states are
restored on resume, so an interrupted and resumed run ends with the same weights as an
uninterrupted one (on the same device and thread count). Under ``torchrun`` each rank trains on a
disjoint shard (DistributedSampler), gradients are averaged (DDP; gloo on CPU, nccl on CUDA) and
only rank 0 writes files. Temporary files a killed run left in the run directory are removed at start.
A step with a NaN/inf loss is skipped on every rank and a persistent one stops the run without
saving (``nonfinite.NonFiniteGuard``).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vehicle_cls import runtime
from vehicle_cls.fileio import atomic_write_text, clean_stale_temps, ensure_dir
from vehicle_cls.progress import progress_bar
from vehicle_cls.train.augment import build_batch_mix
from vehicle_cls.train.checkpoint import LAST_NAME, load_last, rng_states, save_last, seed_everything, set_rng_states
from vehicle_cls.train.config import TrainConfig
from vehicle_cls.train.distributed import all_ranks_agree, all_reduce_sum, barrier, init_distributed, shutdown
from vehicle_cls.train.loaders import build_loaders
from vehicle_cls.train.metrics import topk_correct, validation_row
from vehicle_cls.train.nonfinite import NonFiniteGuard
from vehicle_cls.train.optim import build_optimizer, build_scheduler, head_module
from vehicle_cls.train.splits import DataSplits, prepare_splits

logger = logging.getLogger(__name__)

BEST_NAME = "best"

#: The smallest model input side at which ``run.precision: auto`` trains in bf16 on a CPU; below it, fp32.
#: Measured with torch 2.14.1 (commit f3bf934): the bf16 CPU backward of a plain torchvision ResNet-18 at
#: 16 px, where layer3/layer4 see 1x1 maps, gave run-to-run different, sometimes 1e18-1e31 gradients;
#: 32 px passed 8 of 8 runs. 64 px keeps every ResNet stage at 2x2 or larger, a margin over both.
MIN_BF16_CPU_INPUT = 64


def training_precision(requested: str, device: torch.device, input_size: int) -> str:
    """``run.precision`` resolved for training: ``runtime.resolve_precision``, except that "auto" on a CPU
    trains bf16 only where the CPU runs bf16 natively (``runtime.cpu_has_fast_bf16``) and the input is
    at least ``MIN_BF16_CPU_INPUT`` px; else fp32. An explicit bf16 is kept (with a warning when small).

    Measured on a 2-core AMD EPYC VM exposing only AVX2 (no AVX512, no AMX), torch 2.14.1, ResNet-18 at
    96 px, batch 16, forward + backward, 1 thread: fp32 15.9 images per CPU-second, bf16 autocast 1.0 (emulated
    bf16 kernels): auto must not pick bf16 there."""
    precision = runtime.resolve_precision(requested, device, training=True)
    if precision != "bf16" or device.type != "cpu":
        return precision
    if requested == "auto" and (not runtime.cpu_has_fast_bf16() or input_size < MIN_BF16_CPU_INPUT):
        return "fp32"
    if input_size < MIN_BF16_CPU_INPUT:
        logger.warning(
            "bf16 training on CPU at %d px (below %d px) gave garbage gradients in torch 2.14.1; "
            "consider run.precision=fp32",
            input_size,
            MIN_BF16_CPU_INPUT,
        )
    return precision


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


@dataclass
class _RunState:
    """Where a run stands: the next epoch, the step count, the best epoch so far and the history
    (what ``last.pt`` saves and a resume restores)."""

    epoch: int = 0
    step: int = 0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Train a classifier from a ``TrainConfig``; inject ``classifier``/``splits`` to skip building them.

    ``on_batch(epoch, step, indices)`` (optional) is called for every training batch with the
    dataset indices this rank trained on (for logging, auditing and tests).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        classifier: Any = None,
        splits: DataSplits | None = None,
        on_batch: Callable[[int, int, torch.Tensor], None] | None = None,
    ):
        """Keep the recipe and what is injected; nothing is built until ``fit``.

        Args:
            cfg: the training recipe (``load_config``).
            classifier: a classifier to train instead of a new ``cfg.model`` one (its classes must be the
                dataset's).
            splits: train/val/test splits to use instead of ``prepare_splits(cfg.data)``.
            on_batch: called as ``on_batch(epoch, step, indices)`` after every training batch.
        """
        self.cfg = cfg
        self.classifier = classifier
        self._given_splits = splits
        self.on_batch = on_batch

    # ---- setup ------------------------------------------------------------------------------------
    def _setup(self, resume: bool) -> None:
        cfg = self.cfg
        self.device = runtime.resolve_device(cfg.run.device)
        self.dist = init_distributed(self.device.type)
        if self.dist.enabled:
            self.device = runtime.resolve_device(cfg.run.device, self.dist.local_rank)
        self.precision = training_precision(cfg.run.precision, self.device, cfg.model.input_size)
        logger.info("training precision: %s (run.precision %s, %s)", self.precision, cfg.run.precision, self.device)
        if cfg.run.threads and self.device.type == "cpu":
            torch.set_num_threads(cfg.run.threads)
        if cfg.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.run_dir = Path(cfg.run.out_dir)
        if self.run_dir.exists() and not self.run_dir.is_dir():  # every rank: all fail alike, none waits
            ensure_dir(self.run_dir, "run.out_dir")
        if self.dist.is_main:
            ensure_dir(self.run_dir, "run.out_dir")
            clean_stale_temps(self.run_dir)
        seed_everything(cfg.run.seed)
        self.splits = self._setup_splits(resume)
        self._setup_model()

    def _setup_splits(self, resume: bool) -> DataSplits:
        """The given splits, reused on resume, else ``prepare_splits`` on rank 0 (saved as JSON, read by the rest)."""
        path = self.run_dir / "splits.json"
        splits = self._given_splits
        if splits is None and resume and path.is_file():
            splits = DataSplits.load(path)
            logger.info("resume: reusing the splits of %s", path)
        if self.dist.is_main:
            if splits is None:
                splits = prepare_splits(self.cfg.data)
            if not splits.classes:
                raise ValueError(f"data.train {self.cfg.data.train}: the dataset has no classes (no labelled images)")
            splits.save(path)
            import yaml

            atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        barrier(self.dist)
        return splits if splits is not None else DataSplits.load(path)  # other ranks read what rank 0 decided

    def _setup_model(self) -> None:
        cfg = self.cfg
        if self.classifier is None:
            from vehicle_cls.classifier import Classifier, Preprocess

            m = cfg.model
            pre = Preprocess(
                input_size=m.input_size, resize=m.resize, interpolation=m.interpolation, crop_fraction=m.crop_fraction
            )
            self.classifier = Classifier.create(
                m.arch, classes=self.splits.classes, weights=m.weights, dropout=m.dropout, preprocess=pre, device="cpu"
            )
            if m.weights is None:
                scratch_batchnorm_momentum(self.classifier.model)
        clf = self.classifier
        if list(clf.classes) != list(self.splits.classes):
            raise ValueError(
                f"classifier classes {clf.classes[:3]}... differ from the dataset's {self.splits.classes[:3]}..."
            )
        clf.to(self.device)
        self.model: nn.Module = clf.model
        if cfg.run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            clf.model = self.model
        self.head = head_module(self.model, clf.arch)

    def _loaders(self) -> None:
        self.loaders = build_loaders(
            self.cfg, self.splits, self.classifier.preprocess, self.dist, pin_memory=self.device.type == "cuda"
        )
        self.steps_per_epoch = len(self.loaders.train)

    # ---- helpers ------------------------------------------------------------------------------------
    def _autocast(self):
        return runtime.autocast(self.device, self.precision)

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
        return all_reduce_sum(values, self.dist, self.device)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.cfg.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    # ---- main ---------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train (or continue a run from ``last.pt`` with ``resume=True``) and return the result.

        Args:
            resume: continue the run in ``cfg.run.out_dir`` from its ``last.pt`` (same splits).

        Returns:
            The run's outcome; ``best_dir`` is the best epoch's classifier bundle.

        Raises:
            ValueError: a dataset with no classes, an injected classifier whose classes differ from the
                dataset's, or a ``last.pt`` that cannot be resumed.
            FileNotFoundError: ``resume`` without a ``last.pt``.
            DatasetError: the dataset cannot be opened or read.
            NonFiniteLossError: the loss stayed NaN/inf for ``run.max_nonfinite_steps`` steps in a row.
        """
        try:
            return self._fit(resume)
        finally:
            shutdown(getattr(self, "dist", None))

    def _fit(self, resume: bool) -> TrainResult:
        self._setup(resume)
        self._loaders()
        self._build_optimization()
        state = self._start_state(resume)
        writer = self._open_writer(resume, state.step)
        try:
            stopped_early, interrupted = self._run_epochs(state, writer)
        finally:
            if writer is not None:
                writer.close()
        best_dir = self.run_dir / BEST_NAME
        return TrainResult(
            self.run_dir,
            best_dir if best_dir.is_dir() else None,
            state.best,
            state.best_epoch,
            len(state.history),
            state.step,
            stopped_early,
            interrupted,
            state.history,
        )

    def _build_optimization(self) -> None:
        """Optimizer, lr schedule, fp16 gradient scaler, loss, batch mixing and the non-finite guard."""
        cfg = self.cfg
        self.optimizer = build_optimizer(cfg, self.model, self.head)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
        self.mix = build_batch_mix(cfg.augment, len(self.splits.classes))
        self.guard = NonFiniteGuard(self.model, cfg.run.max_nonfinite_steps, self.dist, self.device)

    def _start_state(self, resume: bool) -> _RunState:
        """A fresh state, or (``resume``) the one in ``last.pt`` with the model, optimizer and RNGs restored."""
        last = self.run_dir / LAST_NAME
        if not resume:
            if last.is_file():
                if self.dist.is_main:
                    logger.warning("%s exists; starting a new run over it (use --resume to continue it)", last)
                self.guard.last_good = f"none written by this run ({last}, from an earlier run, left as it was)"
            return _RunState()
        ckpt = load_last(last, self.device)
        _warn_config_changes(ckpt.get("config", {}), self.cfg.to_dict())
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_states(ckpt["rng"])
        state = _RunState(
            ckpt["epoch"], ckpt["step"], ckpt["best_metric"], ckpt["best_epoch"], ckpt["bad_epochs"], ckpt["history"]
        )
        logger.info("resumed %s at epoch %d (step %d)", last, state.epoch, state.step)
        self.guard.last_good = f"{last} (epoch {state.epoch})"
        return state

    def _open_writer(self, resume: bool, step: int) -> Any:
        """A TensorBoard writer on rank 0 when ``run.tensorboard``, else None."""
        if not (self.dist.is_main and self.cfg.run.tensorboard):
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb"), purge_step=step if resume else None)

    def _run_epochs(self, state: _RunState, writer: Any) -> tuple[bool, bool]:
        """Train from ``state.epoch`` to the end; returns (stopped_early, interrupted)."""
        r = self.cfg.run
        self._frozen = False
        net: nn.Module | None = None
        for epoch in range(state.epoch, r.epochs):
            frozen = epoch < r.freeze_backbone_epochs
            if net is None or frozen != self._frozen:
                self._set_frozen(frozen)
                net = self._wrap()
                if frozen:
                    logger.info("epoch %d: backbone frozen (head only)", epoch + 1)
            t0 = time.perf_counter()
            train_stats, state.step, complete = self._train_epoch(net, epoch, state.step, writer)
            if not complete:
                logger.info(
                    "stopped at step %d (run.max_steps) inside epoch %d; last.pt holds epoch %d",
                    state.step,
                    epoch + 1,
                    epoch,
                )
                return False, True
            self.guard.check_weights(self.model, self.optimizer, epoch)  # never save NaN weights
            val = self._validate()
            row = {
                "epoch": epoch + 1,
                "step": state.step,
                "lr": self.optimizer.param_groups[0]["lr"],
                **train_stats,
                **val,
                "seconds": round(time.perf_counter() - t0, 3),
            }
            state.history.append(row)
            self._end_epoch(state, val, row, writer)
            if r.early_stopping_patience and state.bad_epochs >= r.early_stopping_patience:
                logger.info(
                    "early stopping: no %s improvement for %d epochs (best %.4f at epoch %s)",
                    r.monitor,
                    state.bad_epochs,
                    state.best,
                    state.best_epoch,
                )
                return True, False
            if r.max_steps is not None and state.step >= r.max_steps:
                interrupted = epoch + 1 < r.epochs
                if interrupted:
                    logger.info("stopped at step %d (run.max_steps) after epoch %d", state.step, epoch + 1)
                return False, interrupted
        return False, False

    def _end_epoch(self, state: _RunState, val: dict[str, float], row: dict[str, Any], writer: Any) -> None:
        """Track the best epoch, log the epoch, and write ``best/``, ``last.pt`` and ``history.json`` unless
        the non-finite guard blocks saving."""
        r = self.cfg.run
        epoch = row["epoch"]
        metric = val.get(r.monitor)
        blocker = self.guard.save_blocker(val.get("val_loss"))
        higher = r.monitor == "val_top1"
        improved = (
            blocker is None
            and metric is not None
            and (state.best is None or (metric > state.best if higher else metric < state.best))
        )
        if blocker is not None:
            logger.warning("epoch %d: not saved, %s; last good checkpoint: %s", epoch, blocker, self.guard.last_good)
        elif metric is None or improved:
            state.best, state.best_epoch, state.bad_epochs = metric, epoch, 0
        else:
            state.bad_epochs += 1
        logger.info(_epoch_line(row, r.epochs, improved))
        if writer is not None:
            for k, v in row.items():
                if k not in ("epoch", "step") and isinstance(v, (int, float)):
                    writer.add_scalar(f"epoch/{k}", v, epoch)
            writer.flush()
        if blocker is None:
            if self.dist.is_main:
                if metric is None or improved:
                    self._save_best(epoch, state.best, state.history)
                self._save_last(state, epoch)
            self.guard.last_good = f"{self.run_dir / LAST_NAME} (epoch {epoch})"
        barrier(self.dist)

    def _save_last(self, state: _RunState, epoch: int) -> None:
        """``last.pt`` (everything a resume needs) and ``history.json``."""
        save_last(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "epoch": epoch,
                "step": state.step,
                "rng": rng_states(self.device),
                "best_metric": state.best,
                "best_epoch": state.best_epoch,
                "bad_epochs": state.bad_epochs,
                "history": state.history,
                "config": self.cfg.to_dict(),
                "classes": self.splits.classes,
            },
            self.run_dir / LAST_NAME,
        )
        atomic_write_text(
            self.run_dir / "history.json", json.dumps(_json_history(state.history), indent=1, allow_nan=False) + "\n"
        )

    def _train_epoch(self, net: nn.Module, epoch: int, step: int, writer: Any) -> tuple[dict[str, float], int, bool]:
        r = self.cfg.run
        self.loaders.start_epoch(epoch, r.seed)
        self._train_mode()
        min_batch = (
            2 if any(m.training for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)) else 1
        )
        loss_sum = correct = count = skipped = 0.0
        nonfinite_before = self.guard.total
        show = r.progress and self.dist.is_main and sys.stderr.isatty()
        bar = progress_bar(self.steps_per_epoch, show, f"epoch {epoch + 1}/{r.epochs}", "step", leave=False)
        complete = True
        batches = 0
        for batch in self.loaders.train:
            if r.max_steps is not None and step >= r.max_steps:
                complete = False
                break
            images, labels, indices, failed = batch
            skipped += len(failed)
            if self.on_batch is not None:
                self.on_batch(epoch, step, indices)
            batches += 1
            usable = all_ranks_agree(len(labels) >= min_batch, self.dist, self.device)  # every rank steps, or none
            if not usable and len(labels):
                logger.warning(
                    "epoch %d step %d: skipped a batch of %d usable image(s) (BatchNorm needs 2 or more)",
                    epoch + 1,
                    step,
                    len(labels),
                )
                skipped += len(labels)
            if usable:
                images, labels = self._to_device(images), labels.to(self.device, non_blocking=True)
                targets = labels
                if self.mix is not None:
                    images, targets = self.mix(images, labels)
                self.guard.snapshot()
                with self._autocast():
                    logits = net(images)
                    loss = self.criterion(logits.float(), targets)
                if self.guard.step_ok(loss, epoch, step):  # NaN/inf on any rank: no update on any rank
                    self._update(loss)
                    n = len(labels)
                    loss_sum += float(loss.detach()) * n
                    correct += float((logits.detach().argmax(1) == labels).sum())
                    count += n
                    if writer is not None and step % max(1, r.log_every) == 0:
                        writer.add_scalar("train/loss", float(loss.detach()), step)
                        writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], step)
                elif writer is not None:
                    writer.add_scalar("train/nonfinite_steps", self.guard.total, step)
            self._scheduler_step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / max(count, 1):.3f}")
        bar.close()
        if batches < self.steps_per_epoch:
            complete = False
        loss_sum, correct, count, skipped = self._reduce([loss_sum, correct, count, skipped])
        stats = {
            "train_loss": loss_sum / max(count, 1),
            "train_top1": correct / max(count, 1),
            "train_skipped": int(skipped),
            "train_nonfinite": self.guard.total - nonfinite_before,
        }  # the same on every rank: not summed
        return stats, step, complete

    def _update(self, loss: torch.Tensor) -> None:
        """Backward and optimizer step (through the GradScaler, which skips fp16 gradient overflows)."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _scheduler_step(self) -> None:
        """Advance the lr schedule one step, also after a skipped step (without torch's warning that
        the optimizer has not stepped yet: skipping it was deliberate)."""
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"Detected call of `lr_scheduler.step\(\)` before", category=UserWarning
            )
            self.scheduler.step()

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """Loss, top-1 and top-5 on this rank's validation shard, summed over the ranks (``metrics.topk_correct``)."""
        if len(self.splits.val) == 0:
            return {}
        self.model.eval()
        loss_sum = c1 = c5 = count = skipped = 0.0
        for images, labels, _, failed in self.loaders.val:
            skipped += len(failed)
            if not len(labels):
                continue
            images, labels = self._to_device(images), labels.to(self.device)
            with self._autocast():
                logits = self.model(images).float()
            loss_sum += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            scores, truth = logits.cpu().numpy(), labels.cpu().numpy()
            c1 += float(topk_correct(scores, truth, 1).sum())
            c5 += float(topk_correct(scores, truth, 5).sum())
            count += len(labels)
        loss_sum, c1, c5, count, skipped = self._reduce([loss_sum, c1, c5, count, skipped])
        return validation_row(loss_sum, c1, c5, count, skipped)

    def _save_best(self, epoch: int, metric: float | None, history: list[dict]) -> None:
        """Write the classifier bundle to ``best/`` (config.json carries the training summary)."""
        summary = training_summary(
            self.cfg, self.splits, epoch, metric, history, self.precision, self.dist.world_size, self.run_dir
        )
        was_training = self.model.training
        self.classifier.save(self.run_dir / BEST_NAME, training=summary)
        self.model.train(was_training)


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    classifier: Any = None,
    splits: DataSplits | None = None,
    on_batch: Callable[[int, int, torch.Tensor], None] | None = None,
) -> TrainResult:
    """Train per ``cfg`` (continue from ``out_dir/last.pt`` with ``resume``): ``vehicle-cls train`` in Python.

    Args:
        cfg: the training recipe (``load_config``).
        resume: continue the run from ``out_dir/last.pt``.
        classifier: a classifier to train instead of a new one (see ``Trainer``).
        splits: splits to use instead of ``prepare_splits(cfg.data)``.
        on_batch: called as ``on_batch(epoch, step, indices)`` after every training batch.

    Returns:
        The run's outcome (``best_dir``: the best epoch's bundle, for ``Classifier.load``).

    Raises:
        ValueError: a dataset with no classes, a ``classifier`` whose classes differ from the dataset's,
            or a ``last.pt`` that cannot be resumed.
        FileNotFoundError: ``resume`` without a ``last.pt``.
        DatasetError: the dataset cannot be opened or read.
        NonFiniteLossError: the loss stayed NaN/inf for ``run.max_nonfinite_steps`` steps in a row.

    Example:
        ```python
        from vehicle_cls.train import load_config, train
        result = train(load_config("demo_vehicle_types", ["run.epochs=2"]))
        print(result.best_metric, result.best_dir)
        ```
    """
    return Trainer(cfg, classifier=classifier, splits=splits, on_batch=on_batch).fit(resume=resume)


def scratch_batchnorm_momentum(model: nn.Module, momentum: float = 0.1) -> None:
    """A model trained from scratch updates its BatchNorm running statistics at torch's default momentum.

    torchvision's MobileNetV3 and EfficientNet use 0.01 (ported from TensorFlow, tuned for ImageNet's long
    schedules): after the few hundred steps of a small recipe their statistics are still near the initial
    values and evaluation sits at chance while training accuracy rises. The Keras trainer does the same.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def training_summary(
    cfg: TrainConfig,
    splits: DataSplits,
    epoch: int,
    metric: float | None,
    history: list[dict[str, Any]],
    precision: str,
    world_size: int,
    run_dir: Path,
) -> dict[str, Any]:
    """What a ``best/`` bundle's config.json records about the run that wrote it (both trainers)."""
    return {
        "epoch": epoch,
        "monitor": cfg.run.monitor,
        "best_metric": metric,
        "history": _json_history(history),
        "recipe": cfg.to_dict(),
        "data": {
            "train": len(splits.train),
            "val": len(splits.val),
            "test": None if splits.test is None else len(splits.test),
            "dataset": cfg.data.train,
            "crop": cfg.data.crop,
        },
        "precision": precision,
        "world_size": world_size,
        "run_dir": str(run_dir),
    }


def _json_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``history`` for strict JSON files: a non-finite value (a skipped epoch's NaN loss) becomes null."""
    return [
        {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()} for row in history
    ]


def _epoch_line(row: dict, epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"train loss {row['train_loss']:.4f} top1 {row['train_top1']:.2%}"]
    if "val_top1" in row:
        parts.append(f"val loss {row['val_loss']:.4f} top1 {row['val_top1']:.2%} top5 {row['val_top5']:.2%}")
    if row.get("train_nonfinite"):
        parts.append(f"{row['train_nonfinite']} non-finite step(s) skipped")
    parts.append(f"lr {row['lr']:.3g}")
    parts.append(f"{row['seconds']:.1f}s" + (" *" if improved else ""))
    return " | ".join(parts)


def _warn_config_changes(old: dict, new: dict) -> None:
    ignore = {
        ("run", "max_steps"),
        ("run", "progress"),
        ("run", "tensorboard"),
        ("data", "num_workers"),
        ("run", "threads"),
    }
    for section, values in new.items():
        for key, value in (values or {}).items():
            before = (old.get(section) or {}).get(key, value)
            if (section, key) not in ignore and before != value:
                logger.warning("resume: %s.%s changed from %r to %r", section, key, before, value)
