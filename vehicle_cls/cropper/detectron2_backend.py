"""The detectron2 backend: the same checkpoint run by an installed detectron2 (imported lazily)."""

from __future__ import annotations

import numpy as np
import torch

from vehicle_cls.cropper.checkpoint import load_into
from vehicle_cls.cropper.rcnn import InferenceSettings, check_config
from vehicle_cls.results import Detections
from vehicle_cls.runtime import Capabilities, check_precision
from vehicle_cls.zoo import detector_config

INSTALL_HINT = (
    "backend='detectron2' needs detectron2, which is not on PyPI: build it from "
    "https://github.com/facebookresearch/detectron2 (pip install --no-build-isolation 'git+https://github.com/"
    "facebookresearch/detectron2.git'), or use backend='torch' (same boxes, no detectron2 needed)"
)


def detectron2_available() -> bool:
    """True when ``import detectron2`` works."""
    try:
        import detectron2  # noqa: F401
    except ImportError:
        return False
    return True


class Detectron2DetectorBackend:
    """detectron2's own GeneralizedRCNN, built from its model-zoo config and fed our checked weights."""

    name = "detectron2"

    def __init__(
        self,
        config: str,
        state: dict[str, torch.Tensor],
        settings: InferenceSettings,
        device: str | torch.device = "cpu",
        source: str = "<state dict>",
    ):
        try:
            from detectron2 import model_zoo
            from detectron2.config import get_cfg
            from detectron2.data import transforms as T
            from detectron2.modeling import build_model
        except ImportError as exc:
            raise ImportError(INSTALL_HINT) from exc
        mask_on = check_config(config)
        cfg = get_cfg()
        cfg.merge_from_file(model_zoo.get_config_file(detector_config(config).d2_config_file))
        cfg.MODEL.DEVICE = str(torch.device(device))
        cfg.MODEL.MASK_ON = mask_on
        cfg.INPUT.MIN_SIZE_TEST = settings.min_size_test
        cfg.INPUT.MAX_SIZE_TEST = settings.max_size_test
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = settings.score_thresh_test
        cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = settings.nms_thresh_test
        cfg.TEST.DETECTIONS_PER_IMAGE = settings.detections_per_image
        cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = settings.rpn_pre_nms_topk_test
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = settings.rpn_post_nms_topk_test
        cfg.MODEL.RPN.NMS_THRESH = settings.rpn_nms_thresh
        cfg.freeze()
        self.cfg = cfg
        self.config = config
        self.settings = settings
        self.device = torch.device(device)
        self.precision = "fp32"
        self.channels_last = False
        self.model = build_model(cfg).eval()
        load_into(self.model, state, source)
        self._aug = T.ResizeShortestEdge([settings.min_size_test] * 2, settings.max_size_test)
        self.mask_on = mask_on

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    @property
    def capabilities(self) -> Capabilities:
        """fp32 only, images on the CPU (detectron2's own preprocessing); masks with the mask config."""
        return Capabilities(precisions=("fp32",), masks=self.mask_on)

    def set_precision(self, precision: str, parts: tuple[str, ...] | None = None) -> None:
        """detectron2 runs fp32 only, the whole network."""
        check_precision(precision, self.capabilities, "the detectron2 backend")
        if parts is not None:
            raise ValueError("the detectron2 backend runs the whole network in fp32; it has no parts to choose")

    @torch.inference_mode()
    def __call__(self, images: list[np.ndarray]) -> list[Detections]:
        inputs = []
        for im in images:
            bgr = np.ascontiguousarray(im[:, :, ::-1])
            resized = self._aug.get_transform(bgr).apply_image(bgr)
            tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
            inputs.append({"image": tensor, "height": im.shape[0], "width": im.shape[1]})
        outputs = self.model(inputs)
        dets = []
        for im, out in zip(images, outputs):
            inst = out["instances"].to("cpu")
            masks = inst.pred_masks.numpy().astype(bool) if inst.has("pred_masks") else None
            dets.append(
                Detections(
                    inst.pred_boxes.tensor.numpy(),
                    inst.scores.numpy(),
                    inst.pred_classes.numpy(),
                    masks,
                    (int(im.shape[0]), int(im.shape[1])),
                )
            )
        return dets
