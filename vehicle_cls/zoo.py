"""The detectron2 model-zoo configs this package knows, in one registry: whether each has a mask head,
detectron2's config file for it, and where its weights download from. The detector (``cropper.rcnn``),
the detectron2 backend, the weights cache (``weights.KNOWN_WEIGHTS``) and the synthetic test weights
all read this one table."""

from __future__ import annotations

from dataclasses import dataclass

D2_WEIGHTS_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"
ZOO_LICENCE = "CC BY-SA 3.0 (detectron2 model zoo; do not redistribute)"


@dataclass(frozen=True)
class DetectorConfig:
    """One model-zoo config: its name, mask head, detectron2 config file and downloadable weights."""

    name: str
    mask_on: bool
    d2_config_file: str  # path inside detectron2's model_zoo (for the detectron2 backend)
    weights_path: str  # below D2_WEIGHTS_PREFIX
    description: str

    @property
    def weights_url(self) -> str:
        return D2_WEIGHTS_PREFIX + self.weights_path

    @property
    def weights_file(self) -> str:
        """File name in the weights cache: config, model id and file, unique per entry."""
        parts = self.weights_path.split("/")
        return f"{self.name}-{parts[-2]}-{parts[-1]}"


DETECTOR_CONFIGS: dict[str, DetectorConfig] = {
    c.name: c
    for c in (
        DetectorConfig(
            "faster_rcnn_R_101_FPN_3x",
            False,
            "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
            "COCO-Detection/faster_rcnn_R_101_FPN_3x/137851257/model_final_f6e8b1.pkl",
            "detectron2 COCO Faster R-CNN R101-FPN 3x, box AP 42.0",
        ),
        DetectorConfig(
            "mask_rcnn_R_101_FPN_3x",
            True,
            "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
            "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x/138205316/model_final_a3ec72.pkl",
            "detectron2 COCO Mask R-CNN R101-FPN 3x, box AP 42.9, mask AP 38.6",
        ),
    )
}


def detector_config(name: str) -> DetectorConfig:
    """The registry entry for ``name``; an unknown name is a ``ValueError`` listing the known ones."""
    if name not in DETECTOR_CONFIGS:
        raise ValueError(f"unknown cropper config {name!r}; expected one of {sorted(DETECTOR_CONFIGS)}")
    return DETECTOR_CONFIGS[name]
