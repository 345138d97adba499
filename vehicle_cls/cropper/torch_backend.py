"""The pure torch/torchvision backend: our GeneralizedRCNN with detectron2's preprocessing."""
from __future__ import annotations

import numpy as np
import torch

from vehicle_cls.cropper.checkpoint import load_into
from vehicle_cls.cropper.rcnn import GeneralizedRCNN, InferenceSettings, check_config
from vehicle_cls.cropper.transforms import batch_images, preprocess_image
from vehicle_cls.results import Detections

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    """Runs R101-FPN Faster/Mask R-CNN on a device; images in, ``Detections`` (original pixels) out."""

    name = "torch"

    def __init__(self, config: str, state: dict[str, torch.Tensor], settings: InferenceSettings,
                 device: str | torch.device = "cpu", precision: str = "fp32", channels_last: bool = False,
                 source: str = "<state dict>"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, not {precision!r}")
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type == "cpu":
            raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' on the CPU")
        self.config = config
        self.settings = settings
        self.precision = precision
        self.channels_last = channels_last
        self.model = GeneralizedRCNN(check_config(config), settings).eval()
        load_into(self.model, state, source)
        self.model.to(self.device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    @property
    def mask_on(self) -> bool:
        return self.model.mask_on

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[Detections]:
        """One forward pass over ``images`` (RGB uint8 HxWx3), padded together into one batch."""
        s = self.settings
        tensors = [preprocess_image(im, s.min_size_test, s.max_size_test).to(self.device) for im in images]
        batch, sizes = batch_images(tensors, self.model.pixel_mean, self.model.backbone.size_divisibility)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        originals = [im.shape[:2] for im in images]
        outputs = self.model.inference(batch, sizes, originals, PRECISIONS[self.precision])
        return [_to_detections(o, size) for o, size in zip(outputs, originals)]


def _to_detections(out: dict[str, torch.Tensor], image_size: tuple[int, int]) -> Detections:
    masks = out.get("masks")
    return Detections(
        boxes=out["boxes"].float().cpu().numpy(),
        scores=out["scores"].float().cpu().numpy(),
        classes=out["classes"].cpu().numpy(),
        masks=None if masks is None else masks.cpu().numpy(),
        image_size=(int(image_size[0]), int(image_size[1])),
    )
