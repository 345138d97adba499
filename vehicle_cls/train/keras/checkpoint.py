"""The Keras run's resume point ``last.npz``: every model and optimizer variable plus the loop state.

Arrays by position (``model/0`` ... , ``optimizer/0`` ...) and one JSON ``meta`` record (epoch, step,
best metric, history, config, classes); written atomically and read with ``allow_pickle=False``, so a
crafted file can fail but never run code. Variable order is fixed by the model and optimizer built
from the same recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from vehicle_cls.fileio import atomic_writer

LAST_NAME = "last.npz"


def save_last(model: Any, optimizer: Any, meta: dict[str, Any], path: Path) -> None:
    """Write the resume point atomically (a kill leaves the previous file whole)."""
    arrays = {f"model/{i}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    arrays |= {f"optimizer/{i}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    arrays["meta"] = np.frombuffer(json.dumps(meta, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    with atomic_writer(path) as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle


def load_last(model: Any, optimizer: Any, path: Path) -> dict[str, Any]:
    """Restore the variables saved by ``save_last`` and return its meta record; one-line errors."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from (train without --resume first)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"cannot resume: {path} is not a readable Keras training checkpoint ({exc})") from None
    for prefix, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        saved = sorted((int(k.split("/")[1]), v) for k, v in arrays.items() if k.startswith(prefix + "/"))
        if len(saved) != len(variables) or any(a.shape != tuple(v.shape) for (_, a), v in zip(saved, variables)):
            raise ValueError(
                f"cannot resume: {path} holds {len(saved)} {prefix} variables that do not match this "
                f"recipe's {len(variables)} (a different model.arch or input_size?)"
            )
        for (_, array), variable in zip(saved, variables):
            variable.assign(array)
    return meta
