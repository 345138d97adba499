"""The Keras training loop: the torch trainer's run directory and rules, on TensorFlow.

Writes ``config.yaml``, ``splits.json`` (``train/splits.py``: byte-identical to a torch run of the
same ``data`` section), ``history.json`` (same rows), ``tb/`` (``tf.summary``), ``last.npz``
(``keras/checkpoint.py``) and ``best/``, a ``KerasBackend`` bundle that ``Classifier.load``,
``Pipeline.load``, ``vehicle-cls predict`` and ``eval`` open. Exact resume: data order and every
layer's random state are derived from (seed, epoch), and the model and optimizer variables come
back from ``last.npz``, so a run killed inside an epoch and resumed ends with the weights of an
uninterrupted one. A non-finite loss follows ``train/nonfinite.py``: the step's update is skipped
(BatchNorm statistics restored), a streak of ``run.max_nonfinite_steps`` stops the run with a
one-line error naming the last good checkpoint, and ``best/`` is never written from such an epoch.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np

from vehicle_cls import runtime
from vehicle_cls.fileio import atomic_write_text, clean_stale_temps, ensure_dir
from vehicle_cls.train.config import TrainConfig
from vehicle_cls.train.keras import augment, schedule
from vehicle_cls.train.keras import model as kmodel
from vehicle_cls.train.keras.checkpoint import LAST_NAME, load_last, save_last
from vehicle_cls.train.keras.data import KerasData, steps_per_epoch
from vehicle_cls.train.metrics import validation_row
from vehicle_cls.train.splits import DataSplits, prepare_splits
from vehicle_cls.train.trainer import (
    BEST_NAME,
    TrainResult,
    _epoch_line,
    _json_history,
    _warn_config_changes,
    training_summary,
)

logger = logging.getLogger(__name__)


def resolve_keras_precision(precision: str, device: str) -> str:
    """``auto``: ``mixed_bfloat16`` on CPUs with native bf16, ``mixed_float16`` on CUDA, else fp32."""
    if precision == "auto":
        if device == "gpu":
            return "fp16"
        return "bf16" if runtime.cpu_has_fast_bf16() else "fp32"
    return runtime.resolve_precision(precision, "cuda" if device == "gpu" else "cpu", training=True)


class KerasTrainer:
    """Train a Keras classifier from a ``TrainConfig``; inject ``model`` (a Keras model taking float
    0-255 NHWC pixels after ``preprocess``) and/or ``splits`` to skip building them."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        model: Any = None,
        preprocess: str | None = None,
        splits: DataSplits | None = None,
        source: str = "recipe",
    ):
        self.cfg = cfg
        self.model = model
        self.preprocess_mode = preprocess
        self._given_splits = splits
        if model is None:
            self.preprocess_mode = kmodel.keras_arch(cfg, source).preprocess
        elif preprocess is None:
            raise ValueError("an injected Keras model needs its preprocess mode (caffe, tf, torch or none)")
        augment.check_supported(cfg, source)
        schedule.check_supported(cfg, source)

    # ---- setup ------------------------------------------------------------------------------------
    def _setup(self, resume: bool) -> None:
        import os

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("model.backend=keras trains in one process; run it without torchrun")
        from vehicle_cls.classifier.keras.backend import KerasBackend
        from vehicle_cls.classifier.keras.loading import import_keras
        from vehicle_cls.classifier.keras.settings import KerasSettings

        keras = import_keras()
        import tensorflow as tf

        cfg, r = self.cfg, self.cfg.run
        if r.threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(r.threads)
                tf.config.threading.set_inter_op_parallelism_threads(r.threads)
            except RuntimeError:
                logger.info("run.threads: TensorFlow is already running; keeping its thread pools")
        if r.deterministic:
            tf.config.experimental.enable_op_determinism()
        gpus = tf.config.list_physical_devices("GPU")
        want = r.device if r.device != "auto" else ("cuda" if gpus else "cpu")
        if want.startswith("cuda") and not gpus:
            raise ValueError(f"run.device={r.device}: TensorFlow sees no GPU")
        self.device_kind = "gpu" if want.startswith("cuda") else "cpu"
        index = want.split(":", 1)[1] if ":" in want else "0"
        self.tf_device = f"/GPU:{index}" if self.device_kind == "gpu" else "/CPU:0"
        self.precision = resolve_keras_precision(r.precision, self.device_kind)
        self.run_dir = ensure_dir(r.out_dir, "run.out_dir")
        clean_stale_temps(self.run_dir)
        self.splits = self._setup_splits(resume)
        if self.model is None:
            with tf.device(self.tf_device):
                self.model = kmodel.build_model(cfg, len(self.splits.classes), self.precision, r.seed)
        m = cfg.model
        settings = KerasSettings(
            preprocess=self.preprocess_mode,  # type: ignore[arg-type]  # KerasSettings validates it
            input_size=m.input_size,
            resize=m.resize,
            interpolation=m.interpolation,
            output="logits",
        )
        self.backend = KerasBackend(
            self.model, self.splits.classes, settings, device="cpu", source=f"{m.arch} (training)"
        )
        self.augmenter = augment.build_augmenter(cfg, r.seed * 100)
        self.keras = keras

    def _setup_splits(self, resume: bool) -> DataSplits:
        """The torch trainer's splits: the given ones, reused on resume, else ``prepare_splits``; saved as JSON."""
        import yaml

        path = self.run_dir / "splits.json"
        splits = self._given_splits
        if splits is None and resume and path.is_file():
            splits = DataSplits.load(path)
            logger.info("resume: reusing the splits of %s", path)
        if splits is None:
            splits = prepare_splits(self.cfg.data)
        if not splits.classes:
            raise ValueError(f"data.train {self.cfg.data.train}: the dataset has no classes (no labelled images)")
        splits.save(path)
        atomic_write_text(self.run_dir / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        return splits

    # ---- graph functions ------------------------------------------------------------------------------
    def _normalize(self, x: Any) -> Any:
        if self.preprocess_mode == "none":
            return x
        return self.keras.applications.imagenet_utils.preprocess_input(
            x, mode=self.preprocess_mode, data_format="channels_last"
        )

    def _compile_steps(self) -> None:
        """(Re)trace the step functions for the current trainable set (after a freeze change)."""
        import tensorflow as tf

        keras, model, opt = self.keras, self.model, self.optimizer
        tvars = list(model.trainable_variables)
        bn_stats = [
            v
            for layer in _all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)
        ]
        smoothing = self.cfg.optim.label_smoothing
        classes = len(self.splits.classes)
        fp16 = self.precision == "fp16"

        @tf.function(reduce_retracing=True)
        def forward_backward(x: Any, y: Any) -> Any:
            saved = [tf.identity(v.value) for v in bn_stats]
            if self.augmenter is not None:
                x = self.augmenter(x, training=True)
            x = self._normalize(x)
            with tf.GradientTape() as tape:
                logits = tf.cast(model(x, training=True), tf.float32)
                targets = tf.one_hot(y, classes) * (1.0 - smoothing) + smoothing / classes
                loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(targets, logits))
                scaled = opt.scale_loss(loss) if fp16 else loss
            grads = tape.gradient(scaled, tvars)
            finite = tf.math.is_finite(loss)
            for v, s in zip(bn_stats, saved):  # a non-finite step leaves no trace in the statistics
                v.assign(tf.where(finite, v.value, s))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), y), tf.float32))
            return loss, correct, grads

        @tf.function(reduce_retracing=True)
        def apply(grads: Any) -> None:
            opt.apply(grads, tvars)

        k = min(5, classes)

        @tf.function(reduce_retracing=True)
        def evaluate(x: Any, y: Any) -> Any:
            logits = tf.cast(model(self._normalize(x), training=False), tf.float32)
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
            top = tf.math.top_k(logits, k).indices
            hits = tf.equal(tf.cast(top, tf.int64), y[:, None])
            return (
                loss,
                tf.reduce_sum(tf.cast(hits[:, 0], tf.float32)),
                tf.reduce_sum(tf.cast(tf.reduce_any(hits, 1), tf.float32)),
            )

        self.forward_backward, self.apply, self.evaluate_batch = forward_backward, apply, evaluate

    # ---- main ---------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        """Train (or continue from ``last.npz`` with ``resume=True``) and return the result."""
        import tensorflow as tf

        self._setup(resume)
        with tf.device(self.tf_device):
            return self._fit(resume)

    def _fit(self, resume: bool) -> TrainResult:
        import tensorflow as tf
        import torch

        from vehicle_cls.train.distributed import DistInfo
        from vehicle_cls.train.nonfinite import NonFiniteGuard

        cfg, r = self.cfg, self.cfg.run
        self.train_data = KerasData(cfg, self.splits.train, self.splits.box_format, self.backend)
        self.val_data = KerasData(cfg, self.splits.val, self.splits.box_format, self.backend)
        if len(self.train_data) == 0:
            raise ValueError("the training split is empty")
        self.steps_per_epoch = steps_per_epoch(len(self.train_data), r.batch_size)
        if r.freeze_backbone_epochs:
            kmodel.set_backbone_trainable(self.model, True)  # the optimizer is built over every variable
        self.optimizer = schedule.build_optimizer(cfg, list(self.model.trainable_variables), self.precision)
        self.lr = schedule.StepSchedule(cfg, self.steps_per_epoch)
        # the torch trainer's guard (counting, messages, save rules); Keras restores BatchNorm in-graph
        self.guard = NonFiniteGuard(torch.nn.Module(), r.max_nonfinite_steps, DistInfo(), torch.device("cpu"))
        start_epoch, step = 0, 0
        best, best_epoch, bad_epochs = None, None, 0
        history: list[dict[str, Any]] = []
        last = self.run_dir / LAST_NAME
        if not resume and last.is_file():
            logger.warning("%s exists; starting a new run over it (use --resume to continue it)", last)
        if resume:
            meta = load_last(self.model, self.optimizer, last)
            _warn_config_changes(meta.get("config", {}), cfg.to_dict())
            start_epoch, step = meta["epoch"], meta["step"]
            best, best_epoch, bad_epochs = meta["best_metric"], meta["best_epoch"], meta["bad_epochs"]
            history = meta["history"]
            logger.info("resumed %s at epoch %d (step %d)", last, start_epoch, step)
            self.guard.last_good = f"{last} (epoch {start_epoch})"
        elif last.is_file():
            self.guard.last_good = f"none written by this run ({last}, from an earlier run, left as it was)"
        writer = tf.summary.create_file_writer(str(self.run_dir / "tb")) if r.tensorboard else None
        higher = r.monitor == "val_top1"
        stopped_early = interrupted = False
        frozen: bool | None = None
        try:
            for epoch in range(start_epoch, r.epochs):
                if frozen != (epoch < r.freeze_backbone_epochs):
                    frozen = epoch < r.freeze_backbone_epochs
                    if r.freeze_backbone_epochs:
                        kmodel.set_backbone_trainable(self.model, not frozen)
                    self._compile_steps()
                    if frozen:
                        logger.info("epoch %d: backbone frozen (head only)", epoch + 1)
                augment.reseed([self.model, self.augmenter], r.seed, epoch)
                t0 = time.perf_counter()
                train_stats, step, complete = self._train_epoch(epoch, step, writer)
                if not complete:
                    interrupted = True
                    logger.info(
                        "stopped at step %d (run.max_steps) inside epoch %d; %s holds epoch %d",
                        step,
                        epoch + 1,
                        last.name,
                        epoch,
                    )
                    break
                model_view, optimizer_view = _TorchView(self.model.variables), _TorchView(self.optimizer.variables)
                self.guard.check_weights(model_view, optimizer_view, epoch)  # type: ignore[arg-type]  # duck-typed views
                val = self._validate()
                row = {
                    "epoch": epoch + 1,
                    "step": step,
                    "lr": self.lr(step),
                    **train_stats,
                    **val,
                    "seconds": round(time.perf_counter() - t0, 3),
                }
                history.append(row)
                metric = val.get(r.monitor)
                blocker = self.guard.save_blocker(val.get("val_loss"))
                improved = metric is not None and (best is None or (metric > best if higher else metric < best))
                if blocker is not None:
                    improved = False
                    logger.warning(
                        "epoch %d: not saved, %s; last good checkpoint: %s", epoch + 1, blocker, self.guard.last_good
                    )
                elif metric is None or improved:
                    best, best_epoch, bad_epochs = metric, epoch + 1, 0
                else:
                    bad_epochs += 1
                logger.info(_epoch_line(row, r.epochs, improved))
                if writer is not None:
                    with writer.as_default():
                        for k, v in row.items():
                            if k not in ("epoch", "step") and isinstance(v, (int, float)):
                                tf.summary.scalar(f"epoch/{k}", v, step=epoch + 1)
                    writer.flush()
                if blocker is None:
                    if metric is None or improved:
                        self._save_best(epoch + 1, best, history)
                    meta = {
                        "epoch": epoch + 1,
                        "step": step,
                        "best_metric": best,
                        "best_epoch": best_epoch,
                        "bad_epochs": bad_epochs,
                        "history": history,
                        "config": cfg.to_dict(),
                        "classes": self.splits.classes,
                        "backend": "keras",
                    }
                    save_last(self.model, self.optimizer, meta, last)
                    atomic_write_text(
                        self.run_dir / "history.json",
                        json.dumps(_json_history(history), indent=1, allow_nan=False) + "\n",
                    )
                    self.guard.last_good = f"{last} (epoch {epoch + 1})"
                if r.early_stopping_patience and bad_epochs >= r.early_stopping_patience:
                    stopped_early = True
                    logger.info(
                        "early stopping: no %s improvement for %d epochs (best %.4f at epoch %s)",
                        r.monitor,
                        bad_epochs,
                        best,
                        best_epoch,
                    )
                    break
                if r.max_steps is not None and step >= r.max_steps:
                    interrupted = epoch + 1 < r.epochs
                    if interrupted:
                        logger.info("stopped at step %d (run.max_steps) after epoch %d", step, epoch + 1)
                    break
        finally:
            if writer is not None:
                writer.close()
        best_dir = self.run_dir / BEST_NAME
        return TrainResult(
            self.run_dir,
            best_dir if best_dir.is_dir() else None,
            best,
            best_epoch,
            len(history),
            step,
            stopped_early,
            interrupted,
            history,
        )

    def _train_epoch(self, epoch: int, step: int, writer: Any) -> tuple[dict[str, float], int, bool]:
        import tensorflow as tf
        import torch

        r = self.cfg.run
        loss_sum = correct = count = skipped = 0.0
        nonfinite_before = self.guard.total
        batches = 0
        complete = True
        for images, labels, _, failed in self.train_data.train_epoch(r.batch_size, r.seed, epoch):
            if r.max_steps is not None and step >= r.max_steps:
                complete = False
                break
            batches += 1
            skipped += int(failed)
            n = int(labels.shape[0])
            if n:
                self.optimizer.learning_rate.assign(self.lr(step))
                loss, hits, grads = self.forward_backward(images, labels)
                value = float(loss)
                if self.guard.step_ok(torch.tensor(value), epoch, step):
                    self.apply(grads)
                    loss_sum += value * n
                    correct += float(hits)
                    count += n
                    if writer is not None and step % max(1, r.log_every) == 0:
                        with writer.as_default():
                            tf.summary.scalar("train/loss", value, step=step)
                            tf.summary.scalar("train/lr", self.lr(step), step=step)
                elif writer is not None:
                    with writer.as_default():
                        tf.summary.scalar("train/nonfinite_steps", self.guard.total, step=step)
                logger.debug(
                    "epoch %d step %d/%d (global %d): loss %.4f",
                    epoch + 1,
                    batches,
                    self.steps_per_epoch,
                    step + 1,
                    value,
                )
            step += 1
        if batches < self.steps_per_epoch:
            complete = False
        stats = {
            "train_loss": loss_sum / max(count, 1),
            "train_top1": correct / max(count, 1),
            "train_skipped": int(skipped),
            "train_nonfinite": self.guard.total - nonfinite_before,
        }
        return stats, step, complete

    def _validate(self) -> dict[str, float]:
        if len(self.val_data) == 0:
            return {}
        loss_sum = c1 = c5 = count = skipped = 0.0
        for images, labels, _, failed in self.val_data.in_order(self.cfg.run.eval_batch_size):
            skipped += int(failed)
            if int(labels.shape[0]) == 0:
                continue
            loss, top1, top5 = self.evaluate_batch(images, labels)
            loss_sum, c1, c5 = loss_sum + float(loss), c1 + float(top1), c5 + float(top5)
            count += int(labels.shape[0])
        return validation_row(loss_sum, c1, c5, count, skipped)

    def _save_best(self, epoch: int, metric: float | None, history: list[dict]) -> None:
        """Write the ``KerasBackend`` bundle to ``best/`` (config.json carries the training summary)."""
        summary = training_summary(self.cfg, self.splits, epoch, metric, history, self.precision, 1, self.run_dir)
        summary["backend"] = "keras"
        self.backend.save(self.run_dir / BEST_NAME, training=summary)


class _TorchView:
    """Keras variables seen as a torch ``state_dict``/optimizer ``state``, for ``NonFiniteGuard.check_weights``."""

    def __init__(self, variables: list[Any]):
        import torch

        self._tensors = {
            v.path: torch.from_numpy(np.asarray(v.numpy(), dtype=np.float32))
            for v in variables
            if np.issubdtype(np.dtype(v.dtype), np.floating)
        }
        self.state = {0: self._tensors}

    def state_dict(self) -> dict[str, Any]:
        return self._tensors


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out += _all_layers(layer)
    return out


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    model: Any = None,
    preprocess: str | None = None,
    splits: DataSplits | None = None,
    source: str = "recipe",
) -> TrainResult:
    """Train per ``cfg`` with Keras (continue from ``out_dir/last.npz`` with ``resume``); ``source``
    (the recipe file) prefixes one-line ConfigErrors."""
    return KerasTrainer(cfg, model=model, preprocess=preprocess, splits=splits, source=source).fit(resume=resume)
