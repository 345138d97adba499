"""The pure torch/torchvision backend: our GeneralizedRCNN with detectron2's preprocessing."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from vehicle_cls.cropper.checkpoint import load_into
from vehicle_cls.cropper.rcnn import GeneralizedRCNN, InferenceSettings, check_config
from vehicle_cls.cropper.transforms import batch_images, preprocess_image, preprocess_on_device
from vehicle_cls.results import Detections
from vehicle_cls.runtime import Capabilities, check_precision


class TorchDetectorBackend:
    """Runs R101-FPN Faster/Mask R-CNN on a device; images in, ``Detections`` (original pixels) out.

    ``precision="fp32"`` runs the reference model (detectron2's numbers, CPU preprocessing with
    PIL as detectron2 does). "bf16"/"fp16" run a prepared copy (:func:`vehicle_cls.cropper.fast.prepare_detector`:
    norms folded, channels_last, on the CPU ROIAlign as one weighted gather and fc1 as a conv, ``parts``
    in bf16/fp16). On CUDA the fast path resizes on the device (within one level of PIL's resize, not
    bit-equal, hence not for fp32).
    """

    name = "torch"

    def __init__(
        self,
        config: str,
        state: dict[str, torch.Tensor],
        settings: InferenceSettings,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        channels_last: bool = False,
        source: str = "<state dict>",
    ):
        self.device = torch.device(device)
        self.config = config
        self.settings = settings
        self.channels_last = channels_last
        self.model = GeneralizedRCNN(check_config(config), settings).eval()
        load_into(self.model, state, source)
        self.model.to(self.device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.precision = "fp32"
        self.parts: tuple[str, ...] = ()
        self._fast: GeneralizedRCNN | None = None
        self.set_precision(precision)

    @property
    def mask_on(self) -> bool:
        return self.model.mask_on

    @property
    def capabilities(self) -> Capabilities:
        """fp32, bf16 and (on CUDA) fp16; device images where the fast path preprocesses on CUDA."""
        cuda = self.device.type == "cuda"
        return Capabilities(
            precisions=("fp32", "bf16", "fp16") if cuda else ("fp32", "bf16"),
            masks=self.mask_on,
            device_images=cuda and self._fast is not None,
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def set_precision(self, precision: str, parts: tuple[str, ...] | None = None) -> None:
        """Switch to ``precision`` (resolved: "fp32", "bf16", "fp16" on CUDA); ``parts``: the detector
        parts run in that dtype (default ``cropper.fast.DETECTOR_LOW_PRECISION_PARTS``, chosen to keep
        agreement with fp32). Builds the fast copy once per setting."""
        from vehicle_cls.cropper.fast import DETECTOR_LOW_PRECISION_PARTS, prepare_detector

        check_precision(precision, self.capabilities, f"the torch detector on {self.device}")
        parts = tuple(DETECTOR_LOW_PRECISION_PARTS if parts is None else parts)
        if precision == self.precision and parts == self.parts and (precision == "fp32" or self._fast is not None):
            return
        self._fast = None if precision == "fp32" else prepare_detector(self.model, self.device, precision, parts)
        self.precision, self.parts = precision, parts

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray | torch.Tensor]) -> list[Detections]:
        """One forward pass over ``images`` (RGB uint8 HxWx3 arrays or tensors), padded into one batch."""
        s = self.settings
        model = self._fast if self._fast is not None else self.model
        if self.capabilities.device_images:
            tensors = [preprocess_on_device(im, s.min_size_test, s.max_size_test, self.device) for im in images]
        else:  # PIL's resize, as detectron2: tensors (e.g. decoded on the device) come to the CPU first
            arrays = [im.cpu().numpy() if isinstance(im, torch.Tensor) else im for im in images]
            tensors = [_to_device(preprocess_image(im, s.min_size_test, s.max_size_test), self.device) for im in arrays]
        batch, sizes = batch_images(tensors, model.pixel_mean, model.backbone.size_divisibility)
        batch = batch.to(next(model.backbone.parameters()).dtype)
        if self.channels_last or self._fast is not None:
            batch = batch.contiguous(memory_format=torch.channels_last)
        originals = [tuple(im.shape[:2]) for im in images]
        with _no_tf32(self.device):
            outputs = model.inference(batch, sizes, originals)
        return [_to_detections(o, size) for o, size in zip(outputs, originals)]


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; to CUDA through pinned memory without blocking the host."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _no_tf32(device: torch.device) -> Any:
    """On CUDA, convolutions in true fp32 (cuDNN would use TF32, ~fp16 precision, which moves
    detections as much as fp16 does); a no-op elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    cudnn = torch.backends.cudnn
    return cudnn.flags(
        enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False
    )


def _to_detections(out: dict[str, torch.Tensor], image_size: tuple[int, int]) -> Detections:
    masks = out.get("masks")
    return Detections(
        boxes=out["boxes"].float().cpu().numpy(),
        scores=out["scores"].float().cpu().numpy(),
        classes=out["classes"].cpu().numpy(),
        masks=None if masks is None else masks.cpu().numpy(),
        image_size=(int(image_size[0]), int(image_size[1])),
    )
