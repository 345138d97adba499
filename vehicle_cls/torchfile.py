"""Read a ``torch.save`` file with ``weights_only=True`` and turn torch's refusal into one line.

A pickle can run code when loaded; ``weights_only`` lets through only tensors, numbers, strings and
plain containers. torch's own refusal is several lines advising to turn that protection off; here
it becomes one line that names the file and the global it refused.
"""

from __future__ import annotations

import os
import re
from typing import Any

from vehicle_cls.errors import VehicleClsError

_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


class TorchFileError(VehicleClsError, ValueError):
    """A torch file could not be read safely; the message names the file and, if any, the refused global."""


def load_torch_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; ``TorchFileError`` (one line) for malicious or corrupt files."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling, zip and I/O errors all become one line
        raise TorchFileError(describe_load_error(path, exc)) from None


def describe_load_error(path: str | os.PathLike, exc: BaseException) -> str:
    """One line for a failed ``torch.load``: the refused global, or the first line of the error."""
    text = str(exc)
    refused = _GLOBAL.search(text)
    if refused is not None:
        return (
            f"{os.fspath(path)}: refused to load global '{refused.group(1)}' (a weights file may hold only "
            "tensors, numbers, strings and plain containers; this one could run code)"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"{os.fspath(path)}: not a readable torch file ({type(exc).__name__}: {first})"
