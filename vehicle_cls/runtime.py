"""Where and how models run: ``device="auto"`` and ``precision="auto"`` resolved in one place.

Every entry point (Pipeline, Cropper, Classifier, training, CLI) asks these helpers instead of
repeating its own rule, so "auto" means the same thing everywhere.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch

#: precision name -> autocast dtype (None: plain fp32).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", *AUTOCAST_DTYPES)


def precision_dtype(precision: str) -> torch.dtype | None:
    """The weight dtype of ``precision`` ("fp32" -> None: keep the module as it is)."""
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, not {precision!r}")
    return AUTOCAST_DTYPES[precision]


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``/None -> this rank's CUDA device when available, else CPU; bare ``"cuda"`` gets
    ``local_rank``'s index. Asking for CUDA without one is a clear error, not a late crash."""
    if device is None or (isinstance(device, str) and device == "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {str(device)!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


@functools.lru_cache(maxsize=None)
def cpu_has_fast_bf16() -> bool:
    """True when this CPU runs bf16 matmuls natively (AMX or AVX512-BF16), where bf16 pays."""
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        flags = ""
    if any(f in flags for f in (" amx_bf16", " avx512_bf16")):
        return True
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return "AMX" in str(capability).upper()


def resolve_precision(precision: str, device: torch.device | str, *, training: bool = False) -> str:
    """``"auto"`` -> the fastest precision that keeps agreement on ``device``: bf16 on CUDA cards that
    support it (else fp16), bf16 on CPUs with native bf16, else fp32. Explicit values are checked."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu":
            return "bf16" if (training or cpu_has_fast_bf16()) else "fp32"
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    return precision


def autocast(device: torch.device | str, precision: str) -> Any:
    """An autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    device = torch.device(device)
    dtype = AUTOCAST_DTYPES[resolve_precision(precision, device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
