"""The torch backend's files in a bundle: ``model.safetensors`` beside ``config.json`` (the directory
and ``config.json`` belong to ``vehicle_cls.bundle``). Reading checks the weights against the config
and refuses a mismatch with a message that names what differs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vehicle_cls.bundle import BundleError, BundlePart
from vehicle_cls.statedict import fit_report, key_list

WEIGHTS_NAME = "model.safetensors"


def torch_part(state_dict: Mapping[str, torch.Tensor], entries: dict[str, Any]) -> BundlePart:
    """The torch backend's share of a bundle: its ``config.json`` entries (naming ``WEIGHTS_NAME``) and
    the weights as safetensors (contiguous CPU tensors), serialised once, inside the bundle swap."""
    entries = {"backend": "torch", **entries, "weights": WEIGHTS_NAME}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    metadata = {"format": "pt", "arch": str(entries.get("arch")), "num_classes": str(len(entries["classes"]))}

    def write(path: Path) -> None:
        from safetensors.torch import save

        path.write_bytes(save(tensors, metadata=metadata))

    return BundlePart(entries, {WEIGHTS_NAME: write})


def read_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of ``model.safetensors`` on the CPU."""
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise BundleError(f"{Path(directory)}: weights file {WEIGHTS_NAME} missing")
    try:
        return load_file(path, device="cpu")
    except Exception as exc:
        raise BundleError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None


def check_weights_fit(
    expected: Mapping[str, torch.Tensor],
    loaded: Mapping[str, torch.Tensor],
    *,
    head_weight_key: str,
    num_classes: int,
    arch: str,
    where: str,
) -> None:
    """Raise ``BundleError`` listing every way ``loaded`` differs from the model the config describes.

    Dtype rule: a floating tensor of another float type (fp16, bf16, fp64) is cast to the model's type
    when loaded; a tensor of another kind (int8 where the model has floats, floats for an integer
    counter, bool, complex) is refused, since casting it would silently change what it means.
    """
    problems = []
    head = loaded.get(head_weight_key)
    if head is not None and head.ndim == 2 and head.shape[0] != num_classes:
        problems.append(f"head has {head.shape[0]} outputs but config lists {num_classes} classes")
    report = fit_report(expected, loaded)
    missing, unexpected = sorted(report.missing), sorted(report.unexpected)
    if missing:
        problems.append(f"missing from the weights: {key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected in the weights: {key_list(unexpected)}")
    reported = set()
    if problems:  # the head mismatch is already said; do not repeat its weight and bias
        reported = {head_weight_key, head_weight_key[: -len("weight")] + "bias"}
    mismatched = [
        f"{k} is {got} but {arch} needs {needed}" for k, got, needed in report.shape_mismatch if k not in reported
    ]
    wrong_kind = [f"{k} is {got} but {arch} needs {needed}" for k, got, needed in report.dtype_mismatch]
    if wrong_kind:
        problems.append(
            "dtype mismatch: "
            + "; ".join(wrong_kind[:5])
            + (f" ({len(wrong_kind)} in all)" if len(wrong_kind) > 5 else "")
        )
    if mismatched:
        problems.append(
            "shape mismatch: "
            + "; ".join(mismatched[:5])
            + (f" ({len(mismatched)} in all)" if len(mismatched) > 5 else "")
        )
    if (missing or unexpected) and len(missing) + len(unexpected) > 10:
        problems.append(f"the weights look like a different architecture than config's arch {arch!r}")
    if problems:
        raise BundleError(f"{where}: weights do not fit config.json: " + "; ".join(problems))
