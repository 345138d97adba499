"""The classifier's forward pass at inference: fp32 runs the model as it is (the exact reference),
bf16/fp16 run its prepared copy from ``classifier.fast``; logits always come back fp32."""

from __future__ import annotations

import torch
from torch import nn

from vehicle_cls.classifier.fast import InferenceCopies
from vehicle_cls.runtime import precision_dtype


def classify_logits(
    copies: InferenceCopies, model: nn.Module, batch: torch.Tensor, precision: str, device: torch.device | str
) -> torch.Tensor:
    """fp32 logits of ``model`` for an NCHW batch: fp32 runs the model as it is (the reference),
    bf16/fp16 run its prepared copy (folded norms, low-precision weights, channels_last)."""
    net = copies.get(model, precision, device)
    dtype = precision_dtype(precision) or next(model.parameters()).dtype
    batch = batch.to(device, non_blocking=True).to(dtype)
    if batch.dim() == 4 and (net is not model or _is_channels_last(net)):
        batch = batch.contiguous(memory_format=torch.channels_last)
    model.eval()
    with torch.inference_mode():
        return net(batch).float()


def _is_channels_last(model: nn.Module) -> bool:
    for p in model.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False
