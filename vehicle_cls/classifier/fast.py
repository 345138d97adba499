"""The classifier's inference copies for the fast path: BatchNorms folded into the convs, weights cast
to bf16/fp16 (not only autocast) and channels_last; one cached copy per (precision, device).

For ``precision="fp32"`` nothing here is used: the model itself is the exact reference. The copies
serve inference only; the original model (what ``save`` writes) is left untouched.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from vehicle_cls.runtime import precision_dtype

logger = logging.getLogger(__name__)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """``model`` (changed in place) with each eval-mode BatchNorm2d that directly follows a Conv2d folded
    into it (torch.fx); the model itself when it cannot be traced (then the norms simply stay)."""
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(model, inplace=True)
    except Exception as exc:  # an untraceable custom model: keep it unfused, it still runs
        logger.info("batch norms not folded (%s: %s)", type(exc).__name__, exc)
        return model


def prepare_classifier(
    model: nn.Module, device: torch.device | str, precision: str, channels_last: bool = True
) -> nn.Module:
    """An inference copy of a torchvision classifier: BatchNorms folded into the convs, weights in
    the precision's dtype, channels_last; for "fp32" the model itself (the exact reference)."""
    dtype = precision_dtype(precision)
    if dtype is None:
        return model
    fast = fold_batch_norms(copy.deepcopy(model).eval().to(torch.device(device)))
    fast = fast.to(dtype)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.eval()


class InferenceCopies:
    """Prepared classifier copies per (precision, device), rebuilt when the source weights change
    (training steps bump the parameters' version counters), so a stale copy is never used."""

    def __init__(self) -> None:
        self._copies: dict[tuple[str, str], tuple[tuple, nn.Module]] = {}

    def get(self, model: nn.Module, precision: str, device: torch.device | str) -> nn.Module:
        """``model`` itself for fp32, else its prepared copy for ``precision`` on ``device``."""
        if precision_dtype(precision) is None:
            return model
        key = (precision, str(torch.device(device)))
        stamp = (id(model), *((p.data_ptr(), p._version) for p in model.parameters()))
        cached = self._copies.get(key)
        if cached is None or cached[0] != stamp:
            self._copies[key] = (stamp, prepare_classifier(model, device, precision))
        return self._copies[key][1]
