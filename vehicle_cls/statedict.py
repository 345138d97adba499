"""How a loaded state dict fits a model: the missing, unexpected, misshaped and wrong-kind tensors,
computed once for every loader (the detector's checkpoints, the classifier's bundles), which then
word the error their own way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FitReport:
    """Differences between the tensors a model needs (``expected``) and those ``loaded``, each list in
    the order of its dict (missing: the model's; unexpected: the file's)."""

    missing: list[str]
    unexpected: list[str]
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, loaded shape, needed shape)
    dtype_mismatch: list[tuple[str, torch.dtype, torch.dtype]]  # (key, loaded, needed): another kind

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch or self.dtype_mismatch)


def dtype_kind(dtype: torch.dtype) -> str:
    """ "floating", "complex", "bool" or "integer": a tensor of another float type can be cast to the
    model's, one of another kind cannot without changing what it means."""
    if dtype.is_floating_point:
        return "floating"
    if dtype.is_complex:
        return "complex"
    return "bool" if dtype == torch.bool else "integer"


def fit_report(expected: Mapping[str, torch.Tensor], loaded: Mapping[str, torch.Tensor]) -> FitReport:
    """Compare ``loaded`` with ``expected`` (a model's ``state_dict()``) key by key."""
    both = [k for k in expected if k in loaded]
    return FitReport(
        missing=[k for k in expected if k not in loaded],
        unexpected=[k for k in loaded if k not in expected],
        shape_mismatch=[
            (k, tuple(loaded[k].shape), tuple(expected[k].shape))
            for k in both
            if tuple(loaded[k].shape) != tuple(expected[k].shape)
        ],
        dtype_mismatch=[
            (k, loaded[k].dtype, expected[k].dtype)
            for k in both
            if dtype_kind(loaded[k].dtype) != dtype_kind(expected[k].dtype)
        ],
    )


def key_list(keys: Sequence[str], limit: int = 5, quote: bool = False) -> str:
    """The first ``limit`` keys, comma-separated, and how many more there are."""
    shown = ", ".join(repr(k) if quote else k for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
