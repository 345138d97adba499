"""The run's resume point ``last.pt``: written atomically, read with ``weights_only=True``.

It holds only tensors, numbers, strings and plain containers (the numpy RNG state is stored as a
tensor), so it loads without unpickling code: a crafted ``last.pt`` is refused in one line, never run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from vehicle_cls.fileio import atomic_writer
from vehicle_cls.torchfile import TorchFileError, load_torch_file

LAST_NAME = "last.pt"
REQUIRED_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "step",
    "rng",
    "best_metric",
    "best_epoch",
    "bad_epochs",
    "history",
)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_states(device: torch.device) -> dict[str, Any]:
    """Every global RNG state, in types ``weights_only`` loading accepts."""
    legacy = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state(legacy=True))
    name, keys, pos, has_gauss, cached = legacy
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": random.getstate(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what ``rng_states`` saved."""
    torch.set_rng_state(states["torch"].cpu())
    n = states["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])


def save_last(state: dict[str, Any], path: Path) -> None:
    """Write the resume point atomically (a kill leaves the previous ``last.pt`` whole)."""
    with atomic_writer(path) as f:
        torch.save(state, f)


def load_last(path: Path, device: torch.device) -> dict[str, Any]:
    """Read ``last.pt`` safely; a malicious, corrupt or foreign file is a one-line ``ValueError``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (train without --resume first)")
    try:
        state = load_torch_file(path, map_location=device)
    except TorchFileError as exc:
        raise ValueError(f"cannot resume: {exc}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"cannot resume: {path} is not a vehicle_cls training checkpoint (missing {', '.join(missing)})"
        )
    return state
