"""Backend choice, the detectron2 backend where detectron2 is installed, and the CUDA path where there is a GPU."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.cropper import Cropper, detectron2_backend, torch_backend
from vehicle_cls.cropper import cropper as cropper_module
from vehicle_cls.runtime import Capabilities
from vehicle_cls.testing.synthetic import synthetic_d2_state_dict, write_zoo_pkl

PHOTOS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "photos")  # tests/data/photos
SMALL = {"min_size_test": 160, "max_size_test": 320}
HAS_D2 = detectron2_backend.detectron2_available()
HAS_CUDA = torch.cuda.is_available()


class _Stub:
    capabilities = Capabilities()  # fp32 only, no masks

    def __init__(self, *args, **kwargs):
        self.args = args
        self.device = torch.device("cpu")

    def set_precision(self, precision, parts=None):
        self.precision = precision


def test_auto_picks_torch_without_detectron2(monkeypatch, tmp_path):
    monkeypatch.setattr(detectron2_backend, "detectron2_available", lambda: False)
    monkeypatch.setattr(torch_backend, "TorchDetectorBackend", type("TorchStub", (_Stub,), {"name": "torch"}))
    monkeypatch.setattr(cropper_module, "load_state_dict", lambda path: {})
    c = Cropper.from_checkpoint(tmp_path / "w.pkl", backend="auto")
    assert c.backend.name == "torch"
    monkeypatch.setattr(detectron2_backend, "detectron2_available", lambda: True)
    monkeypatch.setattr(detectron2_backend, "Detectron2DetectorBackend", type("D2Stub", (_Stub,), {"name": "detectron2"}))
    assert Cropper.from_checkpoint(tmp_path / "w.pkl", backend="auto").backend.name == "detectron2"


@pytest.mark.skipif(HAS_D2, reason="detectron2 is installed here")
def test_detectron2_backend_missing_says_how_to_install(tmp_path):
    with pytest.raises(ImportError, match=r"backend='detectron2' needs detectron2.*backend='torch'"):
        Cropper.from_checkpoint(tmp_path / "never-read.pkl", backend="detectron2")


@pytest.fixture(scope="module")
def zoo_pkl(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("zoo") / "synthetic.pkl"
    write_zoo_pkl(synthetic_d2_state_dict("faster_rcnn_R_101_FPN_3x", 0), path)
    return str(path)


def _photo() -> np.ndarray:
    return np.asarray(Image.open(os.path.join(PHOTOS, "car1.jpg")).convert("RGB").resize((240, 180)))


@pytest.mark.skipif(not HAS_D2, reason="detectron2 is not installed")
def test_torch_backend_equals_detectron2_backend(zoo_pkl):
    ours = Cropper.from_checkpoint(zoo_pkl, backend="torch", **SMALL).detect([_photo()])[0]
    theirs = Cropper.from_checkpoint(zoo_pkl, backend="detectron2", **SMALL).detect([_photo()])[0]
    assert len(ours) == len(theirs) > 0
    np.testing.assert_array_equal(ours.classes, theirs.classes)
    np.testing.assert_allclose(ours.boxes, theirs.boxes, atol=1e-3)
    np.testing.assert_allclose(ours.scores, theirs.scores, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_matches_cpu(zoo_pkl):
    cpu = Cropper.from_checkpoint(zoo_pkl, **SMALL).detect([_photo()])[0]
    gpu_cropper = Cropper.from_checkpoint(zoo_pkl, device="cuda", **SMALL)
    assert gpu_cropper.device.type == "cuda"
    gpu = gpu_cropper.detect([_photo()])[0]
    # different kernels: compare the confident boxes, which are stable under float noise
    strong_cpu, strong_gpu = cpu[np.flatnonzero(cpu.scores > 0.3)], gpu[np.flatnonzero(gpu.scores > 0.3)]
    assert len(strong_cpu) == len(strong_gpu)
    np.testing.assert_allclose(strong_gpu.boxes, strong_cpu.boxes, atol=0.5)
    np.testing.assert_allclose(strong_gpu.scores, strong_cpu.scores, atol=1e-3)
