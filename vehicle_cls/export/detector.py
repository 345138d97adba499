"""Export the R101-FPN detector (backbone, FPN, RPN, ROI heads, box post-processing) to ONNX with a
dynamic image height and width.

The graph is :class:`DetectorGraph`: the resized BGR image (what ``ResizeShortestEdge`` gives, not
yet mean-subtracted or padded) and the original (height, width) in; boxes in original pixels,
scores and COCO classes out (and the 28x28 mask probabilities of the mask model, pasted outside the
graph). It is traced by the TorchScript-based exporter (``dynamo=False``): the model's
data-dependent steps are masks and dynamic sizes, not Python branches, so one trace serves every
image size. The eager model computes the same numbers as before (detectron2 parity is unchanged).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vehicle_cls.cropper.postprocess import to_original
from vehicle_cls.cropper.rcnn import GeneralizedRCNN

ONNX_OPSET = 17  # RoiAlign with half_pixel (aligned=True) needs >= 16
INPUT_NAMES = ["image", "original_size"]
BOX_OUTPUTS = ["boxes", "scores", "classes"]
MASK_OUTPUT = "mask_probs"


class DetectorGraph(nn.Module):
    """One image through ``model``: (1, 3, h, w) resized BGR float 0..255 and int64 (2,) original
    (height, width) -> boxes (N, 4) in original pixels, scores (N,), classes (N,) [, mask_probs (N, 28, 28)]."""

    def __init__(self, model: GeneralizedRCNN):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, original_size: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model = self.model
        div = model.backbone.size_divisibility
        h, w = image.shape[-2], image.shape[-1]  # ints in eager, 0-dim tensors while tracing
        x = F.pad(image - model.pixel_mean, (0, (div - w % div) % div, 0, (div - h % div) % div))
        features = model.backbone(x)
        resized = (_size(h), _size(w))
        proposals = model.proposal_generator(features, [resized])
        result = model.roi_heads(features, [proposals[0][0]], [resized])[0]
        orig = original_size.to(torch.float64)
        out = to_original(result, (_size(h, torch.float64), _size(w, torch.float64)), (orig[0], orig[1]))
        names = BOX_OUTPUTS + ([MASK_OUTPUT] if model.mask_on else [])
        return tuple(out[k] if k != "boxes" else out[k].float() for k in names)


def _size(n: int | torch.Tensor, dtype: torch.dtype = torch.float32) -> int | torch.Tensor:
    """A size as the model's code takes it: the int itself in eager, a float tensor while tracing."""
    return n.to(dtype) if isinstance(n, torch.Tensor) else n


def export_detector(model: GeneralizedRCNN, out: str | os.PathLike, example_size: tuple[int, int] = (320, 480)) -> Path:
    """Write ``model`` (fp32, CPU) as an ONNX graph with dynamic height and width at ``out``; returns ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    graph = DetectorGraph(model.float().eval().cpu())
    generator = torch.Generator().manual_seed(0)
    image = torch.rand((1, 3, *example_size), generator=generator) * 255  # any content: every size is dynamic
    original = torch.tensor(example_size, dtype=torch.int64)
    names = BOX_OUTPUTS + ([MASK_OUTPUT] if model.mask_on else [])
    dynamic = {"image": {2: "height", 3: "width"}, **{n: {0: "detections"} for n in names}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings (sizes are traced)
        torch.onnx.export(
            graph,
            (image, original),
            str(out),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=INPUT_NAMES,
            output_names=names,
            dynamic_axes=dynamic,
        )
    return out
