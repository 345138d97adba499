"""Export a classifier bundle to ONNX or TorchScript, and check the export against PyTorch.

The exported graph takes the classifier's *preprocessed* input, float32 NCHW ``(N, 3, S, S)``
normalised with the bundle's mean/std (any batch size), and returns softmax probabilities
``(N, classes)``. Resizing/cropping stays outside the graph; a JSON sidecar (``<out>.json``) records
the class names and the exact preprocessing so another runtime can reproduce it.
``check_export`` runs the exported file (onnxruntime / torch.jit) and PyTorch on the same images
and reports the largest absolute probability difference. onnx/onnxruntime are imported only here
(``pip install vehicle-cls[export]``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vehicle_cls.classifier import Classifier
from vehicle_cls.classifier.preprocess import preprocess_images
from vehicle_cls.errors import one_line
from vehicle_cls.io.images import load_image

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 18


class _Probabilities(nn.Module):
    """The classifier's network followed by softmax: the function every export computes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).float().softmax(dim=1)


@dataclass
class ExportCheck:
    """How closely the export reproduces PyTorch on ``images`` images."""

    format: str
    images: int
    max_abs_diff: float  # largest |p_export - p_torch| over all images and classes
    top1_agree: float  # fraction of images with the same top-1 class
    broken: list[str] = field(default_factory=list)  # one line per image that could not be read

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "images": self.images,
            "max_abs_diff": self.max_abs_diff,
            "top1_agree": self.top1_agree,
            "broken": self.broken,
        }


def _torch_classifier(classifier: Classifier) -> nn.Module:
    if classifier.model is None:
        raise ValueError("only torch-backend bundles can be exported (this one is a Keras model)")
    model = _Probabilities(classifier.model).eval().cpu()
    model.model.to(memory_format=torch.contiguous_format)
    return model


def export_classifier(classifier: Classifier, out: str | os.PathLike, fmt: str = "onnx") -> Path:
    """Write ``classifier`` as ONNX or TorchScript at ``out`` (+ ``out.json`` sidecar); returns ``out``."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    out = Path(out)
    if (out.suffix == ".onnx") != (fmt == "onnx"):  # run_export and check_export tell the format by the suffix
        raise ValueError(f"{out}: an {fmt} export is written to a {'.onnx' if fmt == 'onnx' else '.pt'} file")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = _torch_classifier(classifier)
    size = classifier.preprocess.input_size
    example = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        if fmt == "torchscript":
            with warnings.catch_warnings():  # torch 2.9+ marks torch.jit deprecated; it is still the portable format
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.trace(model, example).save(str(out))
        else:
            _export_onnx(model, example, out)
    sidecar = {
        "format": fmt,
        "input": "float32 NCHW (N, 3, S, S), preprocessed and normalised",
        "output": "float32 (N, classes) softmax probabilities",
        "arch": classifier.arch,
        "classes": classifier.classes,
        "preprocessing": classifier.preprocess.to_dict(),
        "input_name": "input",
        "output_name": "probabilities",
    }
    Path(str(out) + ".json").write_text(json.dumps(sidecar, indent=2))
    model.model.to(memory_format=torch.channels_last)  # as the pipeline keeps it
    classifier.model.to(classifier.device)
    return out


def _export_onnx(model: nn.Module, example: torch.Tensor, out: Path) -> None:
    import_onnx()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["input"],
        output_names=["probabilities"],
        opset_version=ONNX_OPSET,
        dynamic_shapes={"x": {0: batch}},
        external_data=False,
        verbose=False,
    )  # no "[torch.onnx] ..." progress prints on stdout
    if program is None:  # only the legacy (dynamo=False) exporter returns None
        raise RuntimeError(f"{out}: torch.onnx.export(dynamo=True) returned no ONNXProgram")
    program.save(str(out), external_data=False)


def import_onnx() -> Any:
    """``onnxruntime``, or an ImportError that names the extra to install."""
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"ONNX export needs onnx and onnxruntime: pip install vehicle-cls[export] ({exc})") from exc
    return onnxruntime


def run_export(path: str | os.PathLike, batch: np.ndarray) -> np.ndarray:
    """Probabilities from an exported file (``.onnx`` via onnxruntime on CPU, else TorchScript)."""
    path = Path(path)
    if path.suffix == ".onnx":
        ort = import_onnx()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: batch.astype(np.float32)})[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(torch.from_numpy(batch)).numpy()


def check_export(classifier: Classifier, path: str | os.PathLike, images: Sequence[Any]) -> ExportCheck:
    """Compare the exported file with PyTorch fp32 on ``images`` (paths or arrays, any size); an image
    that cannot be read is listed in ``broken`` (one line) and the others are still compared."""
    decoded, broken = [], []
    for im in images:
        try:
            decoded.append(load_image(im))
        except Exception as exc:
            name, message = str(im) if isinstance(im, (str, os.PathLike)) else type(im).__name__, one_line(exc)
            broken.append(message if message.startswith(name) else f"{name}: {message}")
    if not decoded:
        if broken:
            return ExportCheck(_format_of(path), 0, float("nan"), 0.0, broken)
        raise ValueError("check_export needs at least one image")
    with torch.no_grad():
        batch = preprocess_images(decoded, classifier.preprocess, torch.device("cpu")).float().contiguous()
        want = _torch_classifier(classifier)(batch).numpy()
    classifier.model.to(classifier.device)
    got = run_export(path, batch.numpy())
    if got.shape != want.shape:
        raise RuntimeError(f"{path}: output shape {got.shape}, PyTorch gives {want.shape}")
    return ExportCheck(
        _format_of(path),
        len(decoded),
        float(np.abs(got - want).max()),
        float((got.argmax(1) == want.argmax(1)).mean()),
        broken,
    )


def _format_of(path: str | os.PathLike) -> str:
    return "onnx" if Path(path).suffix == ".onnx" else "torchscript"
