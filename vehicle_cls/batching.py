"""Classifier batches sized to the device's memory, and a runner that halves a batch on out-of-memory.

The arithmetic (``memory_batch_size``) and the halving (``run_in_batches``) are plain functions so
they are checked on the CPU; ``probe_bytes_per_image`` and ``cuda_free_bytes`` read CUDA's memory
statistics and only run on a GPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class BatchLimits:
    """Bounds for a memory-sized batch: at most ``safety`` of the free bytes, ``minimum``..``maximum`` images."""

    minimum: int = 1
    maximum: int = 512
    safety: float = 0.5  # activations measured on a probe batch; cuDNN workspaces and fragmentation need slack

    def __post_init__(self) -> None:
        if not 1 <= self.minimum <= self.maximum:
            raise ValueError(f"batch limits need 1 <= minimum <= maximum, got {self.minimum}..{self.maximum}")
        if not 0.0 < self.safety <= 1.0:
            raise ValueError(f"safety must be in (0, 1], not {self.safety}")


def memory_batch_size(free_bytes: int, per_image_bytes: int, limits: BatchLimits = BatchLimits()) -> int:
    """The largest batch whose activations (``per_image_bytes`` each) fit in ``safety`` of ``free_bytes``,
    clamped to ``[minimum, maximum]``."""
    if per_image_bytes <= 0:
        return limits.maximum
    fits = math.floor(max(0, free_bytes) * limits.safety / per_image_bytes)
    return max(limits.minimum, min(limits.maximum, fits))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the device allocator's out-of-memory error (``torch.OutOfMemoryError``)."""
    return isinstance(exc, torch.OutOfMemoryError)


def run_in_batches(
    run: Callable[[int, int, int], T], total: int, batch_size: int, on_oom: Callable[[], None] | None = None
) -> tuple[list[T], int]:
    """``run(start, stop, batch_size)`` over ``0..total`` in chunks of ``batch_size`` (passed on for callers
    that pad the last chunk to it); a chunk that runs out of device memory is retried at half the size
    (down to 1, then the error is raised), so no item is skipped. Returns the chunk results in order
    and the batch size that worked last (for the next call)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    out: list[T] = []
    start = 0
    while start < total:
        stop = min(total, start + batch_size)
        try:
            out.append(run(start, stop, batch_size))
        except Exception as exc:
            if not is_out_of_memory(exc) or batch_size == 1:
                raise
            batch_size = max(1, batch_size // 2)
            logger.warning(
                "out of device memory on a classifier batch of %d; retrying with %d", stop - start, batch_size
            )
            if on_oom is not None:
                on_oom()
            continue
        start = stop
    return out, batch_size


def cuda_free_bytes(device: torch.device) -> int:
    """Bytes a new allocation can use on a CUDA device: free on the card plus what torch's caching
    allocator holds reserved but unused."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def probe_bytes_per_image(forward: Callable[[torch.Tensor], torch.Tensor], sample: torch.Tensor, n: int = 8) -> int:
    """Peak CUDA memory per image of ``forward`` on a probe batch of ``n`` copies of ``sample`` (one
    CHW input), input and output included: an over-estimate (fixed workspaces count per image)."""
    device = sample.device
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    batch = sample.unsqueeze(0).expand(n, *sample.shape).contiguous()
    out = forward(batch)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out, batch
    return max(1, math.ceil(peak / n))
