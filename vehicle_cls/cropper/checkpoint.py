"""Read detectron2 weights safely: model-zoo ``.pkl`` (restricted unpickler), ``.pth``, our ``.safetensors``.

A pickle can run arbitrary code when loaded, so zoo files go through an unpickler that only builds
numpy arrays, dtypes and plain containers; any other global is refused with an error naming it.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vehicle_cls.errors import VehicleClsError
from vehicle_cls.statedict import fit_report, key_list

logger = logging.getLogger(__name__)

#: (module, name) globals a model-zoo pickle may reference: numpy array/dtype/scalar reconstruction,
#: latin-1 bytes (protocol-2 pickles encode bytes via _codecs.encode) and OrderedDict.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}

#: keys in a detectron2 state dict that are not weights of the network (recomputed from the config).
_IGNORED_SUFFIXES = ("pixel_mean", "pixel_std")
_IGNORED_SUBSTRINGS = ("anchor_generator.cell_anchors",)
#: FrozenBN statistics old checkpoints may lack; detectron2 fills them with mean 0, var 1.
_OPTIONAL_NORM_BUFFERS = {"running_mean": 0.0, "running_var": 1.0}


class CheckpointError(VehicleClsError, ValueError):
    """A weights file could not be read or does not fit the network; the message names file and tensor."""


class _ZooUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise CheckpointError(
            f"{self._path}: refusing to unpickle global '{module}.{name}' "
            "(only numpy arrays are allowed in a detectron2 model-zoo .pkl)"
        )

    def persistent_load(self, pid):
        raise CheckpointError(f"{self._path}: refusing persistent id {pid!r} in a model-zoo .pkl")


def load_zoo_pkl(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Return ``{name: np.ndarray}`` from a detectron2 model-zoo pickle, through the restricted unpickler."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = _ZooUnpickler(f, path).load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt pickle
        first = (str(exc).splitlines() or [""])[0]
        raise CheckpointError(f"{path}: not a readable detectron2 .pkl ({type(exc).__name__}: {first})") from None
    model = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise CheckpointError(f"{path}: expected a dict of arrays (under 'model'), got {type(data).__name__}")
    out = {}
    for k, v in model.items():
        if not isinstance(v, np.ndarray):
            raise CheckpointError(f"{path}: entry {k!r} is {type(v).__name__}, not a numpy array")
        out[str(k)] = v
    return out


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read any supported weights file into ``{detectron2 name: tensor}`` (by suffix: .pkl, .pth/.pt, .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in load_zoo_pkl(path).items()}
    elif suffix in (".pth", ".pt"):
        from vehicle_cls.torchfile import TorchFileError, load_torch_file

        try:
            data = load_torch_file(path)
        except TorchFileError as exc:
            raise CheckpointError(str(exc)) from None
        found = data.get("model", data) if isinstance(data, dict) else None
        if not isinstance(found, dict):
            raise CheckpointError(f"{path}: expected {{'model': {{name: tensor}}}}, got {type(data).__name__}")
        bad = [k for k, v in found.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointError(f"{path}: entry {bad[0]!r} is not a tensor")
        state = found
    elif suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            first = (str(exc).splitlines() or [""])[0]
            raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {first})") from None
    else:
        raise CheckpointError(f"{path}: unknown weights format {suffix!r}; expected .pkl, .pth or .safetensors")
    return state


def save_state_dict(state: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike) -> Path:
    """Write a network's weights (detectron2 names) as ``.safetensors``, atomically."""
    from safetensors.torch import save

    from vehicle_cls.fileio import atomic_write_bytes

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"{path}: the project's weights format is .safetensors")
    if isinstance(state, nn.Module):
        state = state.state_dict()
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    return atomic_write_bytes(path, save(state, metadata={"format": "detectron2-names"}))


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | os.PathLike = "<state dict>") -> None:
    """Strictly copy ``state`` into ``model``: a missing, unexpected or misshaped tensor is an error naming it."""
    expected = {k: v for k, v in model.state_dict().items() if not _ignored(k)}
    state = {k: v for k, v in state.items() if not _ignored(k)}
    for name, default in (
        (n, d) for n in expected for suffix, d in _OPTIONAL_NORM_BUFFERS.items() if n.endswith(f".norm.{suffix}")
    ):
        if name not in state:
            state[name] = torch.full_like(expected[name], default)
    report = fit_report(expected, state)
    if report.missing or report.unexpected:
        parts = []
        if report.missing:
            parts.append(f"missing tensor(s) {key_list(report.missing, quote=True)}")
        if report.unexpected:
            parts.append(f"unexpected tensor(s) {key_list(report.unexpected, quote=True)}")
            if all(k.startswith("roi_heads.mask_head.") for k in report.unexpected):
                parts.append("a Mask R-CNN checkpoint? use config='mask_rcnn_R_101_FPN_3x'")
        raise CheckpointError(f"{source}: does not fit the network: " + "; ".join(parts))
    if report.shape_mismatch:
        k, got, needed = report.shape_mismatch[0]
        more = len(report.shape_mismatch) - 1
        raise CheckpointError(
            f"{source}: tensor {k!r} has shape {got}, the network needs {needed}"
            + (f" (and {more} more misshaped)" if more else "")
        )
    result = model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
    leftover = [k for k in result.missing_keys if not _ignored(k)] + list(result.unexpected_keys)
    if leftover:  # pragma: no cover - guarded by the checks above
        raise CheckpointError(f"{source}: could not load tensor(s) {key_list(leftover, quote=True)}")
    logger.debug("loaded %d tensors from %s", len(state), source)


def _ignored(name: str) -> bool:
    return name.endswith(_IGNORED_SUFFIXES) or any(s in name for s in _IGNORED_SUBSTRINGS)
