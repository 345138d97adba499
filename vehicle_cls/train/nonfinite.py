"""Guard against a loss that turns NaN/inf during training: skip that step, stop if it persists.

A step whose loss is not finite applies no update (no backward, no optimizer step) on every DDP
rank alike (the ranks agree through one all-reduce, so none waits for another), and the BatchNorm
statistics its forward pass wrote are put back. After ``run.max_nonfinite_steps`` such steps in a
row the run stops with ``NonFiniteLossError``, one line naming the epoch, the step and the last good
checkpoint. An epoch is not saved while it ends in such a streak (or its validation loss is not
finite), and the run stops rather than save NaN/inf weights. Gradients that overflow under fp16
with a finite loss stay the GradScaler's job (it skips those steps and lowers its scale); they are
not counted here.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from vehicle_cls.errors import VehicleClsError
from vehicle_cls.train.distributed import DistInfo, all_ranks_agree

logger = logging.getLogger(__name__)


class NonFiniteLossError(VehicleClsError, RuntimeError):
    """Training stopped because the loss (or the weights) stayed NaN/inf; the message is one line."""


class NonFiniteGuard:
    """Per-step loss check, BatchNorm-statistics rollback and the consecutive-failure limit."""

    def __init__(self, model: nn.Module, limit: int, dist: DistInfo, device: torch.device):
        self.limit = int(limit)
        self.dist = dist
        self.device = device
        self.buffers = list(model.buffers())  # BatchNorm running mean/var and counters
        self.saved = [b.detach().clone() for b in self.buffers]
        self.in_a_row = 0
        self.total = 0
        self.last_good = "none written yet"  # set by the trainer after every save

    def snapshot(self) -> None:
        """Remember the buffers before a forward pass (a few hundred KB copied on the device)."""
        if self.buffers:
            torch._foreach_copy_(self.saved, self.buffers)

    def step_ok(self, loss: torch.Tensor, epoch: int, step: int) -> bool:
        """True when ``loss`` is finite on every rank; else undo the buffers, log, count, maybe stop."""
        local = bool(torch.isfinite(loss.detach()).all())
        if all_ranks_agree(local, self.dist, self.device):
            self.in_a_row = 0
            return True
        if self.buffers:
            torch._foreach_copy_(self.buffers, self.saved)
        self.in_a_row += 1
        self.total += 1
        value = f"{float(loss.detach()):g}" if not local else "not finite on another rank"
        if self.in_a_row >= self.limit:
            raise NonFiniteLossError(
                f"epoch {epoch + 1} step {step}: the training loss was {value} for {self.in_a_row} step(s) in a row "
                f"(run.max_nonfinite_steps={self.limit}); stopped, these weights not saved; "
                f"last good checkpoint: {self.last_good}"
            )
        logger.warning(
            "epoch %d step %d: loss %s; skipped this step's update (%d in a row, the run stops at %d)",
            epoch + 1,
            step,
            value,
            self.in_a_row,
            self.limit,
        )
        return False

    def save_blocker(self, val_loss: float | None) -> str | None:
        """Why this epoch's weights must not become the last good checkpoint (None: they may)."""
        if self.in_a_row:
            return f"its last {self.in_a_row} step(s) had a non-finite loss"
        if val_loss is not None and not math.isfinite(val_loss):
            return f"the validation loss is {val_loss}"
        return None

    def check_weights(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Raise before an epoch's checkpoint would be written with NaN/inf weights or optimizer state."""
        bad = _first_nonfinite(model, optimizer)
        if all_ranks_agree(bad is None, self.dist, self.device):
            return
        raise NonFiniteLossError(
            f"epoch {epoch + 1}: {bad or 'a tensor on another rank'} is not finite after the epoch's steps "
            f"(the learning rate may be too high); stopped, these weights not saved; "
            f"last good checkpoint: {self.last_good}"
        )


def _first_nonfinite(model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """The name of the first NaN/inf floating-point tensor in the model or the optimizer state."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"model tensor {name}"
    for state in optimizer.state.values():
        for key, value in state.items():
            if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return f"optimizer state {key}"
            if isinstance(value, float) and not math.isfinite(value):
                return f"optimizer state {key}"
    return None
