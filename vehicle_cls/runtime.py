"""Where and how models run: ``device="auto"`` and ``precision="auto"`` resolved in one place.

Every entry point (Pipeline, Cropper, Classifier, training, CLI) asks these helpers instead of
repeating its own rule, so "auto" means the same thing everywhere.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

import torch

#: precision name -> autocast dtype (None: plain fp32).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", *AUTOCAST_DTYPES)
#: The precision every inference facade (Pipeline, Classifier.predict, the CLI, the service, Ray) starts from;
#: a facade that differs says why where it does.
DEFAULT_PRECISION = "auto"


@dataclass(frozen=True)
class Capabilities:
    """What a model backend declares it can do, so callers ask this instead of its name or its attributes."""

    precisions: tuple[str, ...] = ("fp32",)  # resolved precisions it runs ("fp32", "bf16", "fp16")
    device_images: bool = False  # takes decoded images as device tensors and uses them where they lie
    masks: bool = False  # detector: predicts instance masks
    compile: bool = False  # classifier: can run through torch.compile
    memory_batches: bool = False  # classifier: sizes its batches to free device memory when none is given


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


@functools.cache
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


def resolve_precision(
    precision: str,
    device: torch.device | str,
    *,
    training: bool = False,
    capabilities: Capabilities | None = None,
    what: str = "the model",
) -> str:
    """``"auto"`` -> the fastest precision that keeps agreement on ``device``: bf16 on CUDA cards that
    support it (else fp16), bf16 on CPUs with native bf16, else fp32. Explicit values are checked.

    ``capabilities`` (a backend's): "auto" falls back to fp32 where the backend does not run the fast one;
    an explicit precision it does not run is ``check_precision``'s one-line error naming ``what``."""
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, not {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision fp16 needs CUDA; use bf16 or fp32 on CPU")
    resolved = precision
    if precision == "auto":
        if device.type == "cuda":
            resolved = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu":
            resolved = "bf16" if (training or cpu_has_fast_bf16()) else "fp32"
        else:
            resolved = "fp32"
    if capabilities is not None and resolved not in capabilities.precisions:
        return "fp32" if precision == "auto" else check_precision(precision, capabilities, what)
    return resolved


def check_precision(precision: str, capabilities: Capabilities, what: str) -> str:
    """A backend's check of a precision its caller resolved (``resolve_precision``): returned when the
    backend runs it, else a one-line ``ValueError`` naming ``what``."""
    if precision not in capabilities.precisions:
        hint = " (resolve 'auto' first: runtime.resolve_precision)" if precision == "auto" else ""
        raise ValueError(f"{what} runs in {', '.join(capabilities.precisions)} only, not {precision!r}{hint}")
    return precision


def autocast(device: torch.device | str, precision: str) -> Any:
    """An autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    device = torch.device(device)
    dtype = precision_dtype(resolve_precision(precision, device))
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
