"""detectron2's GeneralizedRCNN (R101-FPN Faster / Mask R-CNN) for inference, with detectron2's parameter names."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from vehicle_cls.cropper.fpn import FPN
from vehicle_cls.cropper.postprocess import postprocess
from vehicle_cls.cropper.resnet import ResNet
from vehicle_cls.cropper.roi_heads import StandardROIHeads
from vehicle_cls.cropper.rpn import RPN
from vehicle_cls.cropper.transforms import PIXEL_MEAN_BGR, batch_images
from vehicle_cls.fromdict import strict_from_dict
from vehicle_cls.zoo import detector_config


@dataclass
class InferenceSettings:
    """detectron2's test-time settings (defaults are the model-zoo configs' values)."""

    min_size_test: int = 800
    max_size_test: int = 1333
    score_thresh_test: float = 0.05
    nms_thresh_test: float = 0.5
    detections_per_image: int = 100
    rpn_pre_nms_topk_test: int = 1000
    rpn_post_nms_topk_test: int = 1000
    rpn_nms_thresh: float = 0.7
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.min_size_test <= 0 or self.max_size_test < self.min_size_test:
            raise ValueError(f"need 0 < min_size_test <= max_size_test, got {self.min_size_test}/{self.max_size_test}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "", prefix: str = "test_settings.") -> InferenceSettings:
        """Inverse of :meth:`to_dict`; an unknown key is an error naming ``source`` and the key."""
        return strict_from_dict(cls, d, source=source, prefix=prefix)


def check_config(config: str) -> bool:
    """Return whether ``config`` has a mask head; unknown names are an error listing the known ones."""
    return detector_config(config).mask_on


class GeneralizedRCNN(nn.Module):
    """backbone (ResNet-101 + FPN) -> proposal_generator (RPN) -> roi_heads; state dict = detectron2's."""

    pixel_mean: torch.Tensor  # registered as a (non-persistent) buffer in __init__

    def __init__(self, mask_on: bool = False, settings: InferenceSettings | None = None):
        super().__init__()
        s = settings or InferenceSettings()
        self.settings = s
        self.backbone = FPN(ResNet())
        self.proposal_generator = RPN(
            pre_nms_topk=s.rpn_pre_nms_topk_test, post_nms_topk=s.rpn_post_nms_topk_test, nms_thresh=s.rpn_nms_thresh
        )
        self.roi_heads = StandardROIHeads(80, mask_on, s.score_thresh_test, s.nms_thresh_test, s.detections_per_image)
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN_BGR).view(3, 1, 1), persistent=False)

    @property
    def mask_on(self) -> bool:
        return self.roi_heads.mask_on

    def forward(
        self, images: list[torch.Tensor], original_sizes: list[tuple[int, int]]
    ) -> list[dict[str, torch.Tensor]]:
        """Resized BGR float CHW tensors (0-255) -> per image boxes/scores/classes(/masks) in original pixels."""
        batch, sizes = batch_images(images, self.pixel_mean, self.backbone.size_divisibility)
        return self.inference(batch, sizes, original_sizes)

    def inference(
        self, batch: torch.Tensor, sizes: list[tuple[int, int]], original_sizes: list[tuple[int, int]]
    ) -> list[dict[str, torch.Tensor]]:
        """Run on an already normalized and padded batch (N, 3, H, W), in the batch's dtype."""
        features = self.backbone(batch)
        proposals = self.proposal_generator(features, sizes)
        results = self.roi_heads(features, [p[0] for p in proposals], sizes)
        return [
            postprocess(
                {k: (v.float() if v.is_floating_point() else v) for k, v in r.items()},
                size,
                orig,
                self.settings.mask_threshold,
            )
            for r, size, orig in zip(results, sizes, original_sizes)
        ]
