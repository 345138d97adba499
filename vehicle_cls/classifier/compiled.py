"""``torch.compile`` for the classifier's inference copies (an opt-in: it pays only where measured).

``CompiledCopies`` hands ``classifier.forward.classify_logits`` a compiled module in place of each prepared copy
(fp32: the model itself), compiled once per copy and again only when the copy is rebuilt.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from vehicle_cls.classifier.fast import InferenceCopies

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that record CUDA graphs on CUDA


def resolve_compile(mode: bool | str | None) -> str | None:
    """The torch.compile mode for an option value: False/None -> None (eager), True -> "default"."""
    if mode is None or mode is False:
        return None
    if mode is True:
        return "default"
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile must be True, False or one of {COMPILE_MODES}, not {mode!r}")
    return str(mode)


def uses_cuda_graphs(mode: str, device: torch.device | str) -> bool:
    """True when ``mode`` records CUDA graphs on ``device`` (then every call must have the same shape)."""
    return torch.device(device).type == "cuda" and mode in _GRAPH_MODES


class CompiledCopies(InferenceCopies):
    """The inference copies of ``copies``, each wrapped once in ``torch.compile(mode=mode)``."""

    def __init__(self, copies: InferenceCopies, mode: str):
        super().__init__()
        self.copies, self.mode = copies, mode
        self._compiled: dict[tuple[str, str], tuple[nn.Module, nn.Module]] = {}

    def get(self, model: nn.Module, precision: str, device: torch.device | str) -> nn.Module:
        """The compiled form of ``copies.get(model, precision, device)``."""
        net = self.copies.get(model, precision, device)
        key = (precision, str(torch.device(device)))
        cached = self._compiled.get(key)
        if cached is None or cached[0] is not net:
            self._compiled[key] = (net, cast(nn.Module, torch.compile(net, mode=self.mode)))  # an OptimizedModule
        return self._compiled[key][1]
