"""The whole pipeline exports to ONNX (detector with a dynamic image size, crop op, classifier) and
``vehicle_cls.onnx`` runs it without torch, giving torch's detections, crops and labels on real photos."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls import Classifier, Cropper, Pipeline
from vehicle_cls.classifier import Preprocess
from vehicle_cls.cli import main
from vehicle_cls.testing.synthetic import synthetic_d2_state_dict, write_zoo_pkl

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((Path(__file__).parents[1] / "data" / "photos").glob("*.jpg"))
CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]
#: (width, height) the real 100x100 photos are upscaled to: three detector input sizes (320x320,
#: 320x533, 533x246), square, landscape and portrait
SIZES = [(100, 100), (250, 150), (120, 260)]


def _pipeline(pkl: Path, config: str = "faster_rcnn_R_101_FPN_3x", resize: str = "squash", **policy) -> Pipeline:
    cropper = Cropper.from_checkpoint(pkl, config=config, device="cpu", min_size_test=320, max_size_test=533,
                                      min_score=0.05, **policy)  # 0.05: the synthetic detector's scores are low
    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=CLASSES, weights=None,
                            preprocess=Preprocess(input_size=96, resize=resize))
    with torch.no_grad():  # a non-uniform head so that the labels differ between crops
        clf.model.fc[-1].weight.mul_(20)
    return Pipeline(cropper, clf, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Real photos at three sizes, and one file that is not an image."""
    d = tmp_path_factory.mktemp("images")
    out = []
    for photo, size in zip(PHOTOS, SIZES):
        with Image.open(photo) as im:
            path = d / f"{photo.stem}_{size[0]}x{size[1]}.png"
            im.convert("RGB").resize(size, Image.BICUBIC).save(path)
            out.append(path)
    (d / "broken.jpg").write_bytes(b"not a jpeg at all")
    return out + [d / "broken.jpg"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, images) -> tuple[Pipeline, Path, dict, str]:
    """A bundle with a (synthetic-weight) detector, exported and checked once by the command line."""
    d = tmp_path_factory.mktemp("onnx")
    write_zoo_pkl(synthetic_d2_state_dict(), d / "model.pkl")
    pipe = _pipeline(d / "model.pkl")
    bundle = pipe.save(d / "bundle")
    out = d / "export"
    code = subprocess.run(
        [sys.executable, "-m", "vehicle_cls", "export", "--model", str(bundle), "--format", "onnx", "--out", str(out),
         "--check", *map(str, images)], capture_output=True, text=True, cwd=ROOT, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert code.returncode == 0, code.stderr[-3000:]
    return pipe, out, json.loads(code.stdout.strip().splitlines()[-1]), code.stderr


def test_export_check_passes_on_photos_of_three_sizes(exported, images):
    _, out, report, stderr = exported
    assert sorted(p.name for p in out.iterdir()) == ["classifier.onnx", "crops.onnx", "detector.onnx", "manifest.json"]
    assert report["ok"] and report["images"] == 3 and len(report["sizes"]) == 3, report
    assert report["detections_equal"] and report["images_with_other_detections"] == 0
    assert report["same_crop"] and report["top1_agree"] == 1.0
    assert report["max_box_diff"] <= 0.05 and report["max_score_diff"] <= 1e-4
    # the broken file is one line, and the others were still compared
    assert len(report["broken"]) == 1 and "broken.jpg" in report["broken"][0] and "\n" not in report["broken"][0]
    assert "not compared" in stderr and "broken.jpg" in stderr


def test_onnx_runtime_runs_without_torch_and_gives_torch_results(exported, images):
    pipe, out, _, _ = exported
    code = (
        "import sys, json\n"
        "for name in ('torch', 'torchvision'): sys.modules[name] = None  # any import of them raises\n"
        "from vehicle_cls.onnx import Pipeline\n"
        f"results = Pipeline.load({str(out)!r})({[str(p) for p in images]!r})\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'torch' and sys.modules[m] is not None]\n"
        "print(json.dumps([r.to_dict() for r in results]))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout)
    want = [r.to_dict() for r in pipe(images)]
    assert len(got) == len(want) == 4
    assert want[3]["error"] and got[3]["error"] and "broken.jpg" in got[3]["error"]
    for w, g in zip(want[:3], got[:3]):
        assert g["error"] is None and len(g["vehicles"]) == len(w["vehicles"]) >= 1
        for wv, gv in zip(w["vehicles"], g["vehicles"]):
            assert gv["label"] == wv["label"] and abs(gv["score"] - wv["score"]) < 1e-4
            assert gv["fallback"] == wv["fallback"]
            if wv["box"] is not None:
                assert np.abs(np.subtract(gv["box"], wv["box"])).max() <= 0.05


def test_detector_graph_in_eager_torch_is_the_detector(exported, images):
    """The exported function, run by torch itself, gives ``Cropper.detect``'s numbers bit for bit."""
    from vehicle_cls.cropper.transforms import preprocess_image
    from vehicle_cls.export.detector import DetectorGraph
    from vehicle_cls.io.images import load_image

    pipe = exported[0]
    graph = DetectorGraph(pipe.cropper.backend.model)
    for path in images[:3]:
        rgb = load_image(path)
        det = pipe.cropper.detect([rgb])[0]
        with torch.no_grad():
            boxes, scores, classes = graph(preprocess_image(rgb, 320, 533)[None], torch.tensor(rgb.shape[:2]))
        assert np.array_equal(boxes.numpy(), det.boxes) and np.array_equal(scores.numpy(), det.scores)
        assert np.array_equal(classes.numpy(), det.classes)


@pytest.mark.parametrize("resize", ["squash", "center_crop", "letterbox"])
def test_numpy_preprocessing_twins_match_torch(resize):
    """vehicle_cls.onnx.preprocess repeats torch code (which it cannot import): the same numbers."""
    from vehicle_cls.classifier.preprocess import preprocess_tensor
    from vehicle_cls.cropper import transforms
    from vehicle_cls.onnx import preprocess as twin

    for h, w in [(100, 100), (150, 250), (260, 120), (1, 5000)]:
        assert twin.resized_shape(h, w, 320, 533) == transforms.resized_shape(h, w, 320, 533)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 110, 3), dtype=np.uint8)
    assert np.array_equal(twin.detector_input(image, 320, 533)[0], transforms.preprocess_image(image, 320, 533).numpy())
    cfg = Preprocess(input_size=48, resize=resize)
    whole = twin.whole_image(image, cfg.to_dict())
    assert np.abs(whole - preprocess_tensor(torch.from_numpy(image).permute(2, 0, 1), cfg).numpy()).max() < 1e-4


def test_crops_graph_matches_torch_crop(exported):
    """crops.onnx (ONNX RoiAlign) + the numpy windows reproduce the torch classifier's crop input."""
    from vehicle_cls.classifier.preprocess import crop_resize_on_device
    from vehicle_cls.onnx import Pipeline as OnnxPipeline

    pipe, out, _, _ = exported
    onnx_pipe = OnnxPipeline(out)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    boxes = [(3.5, 2.25, 190.0, 100.0), (10.0, 10.0, 30.0, 70.0), (0.0, 0.0, 200.0, 120.0)]
    got = onnx_pipe._crop(image, boxes)
    want = crop_resize_on_device(torch.from_numpy(image).permute(2, 0, 1), torch.tensor(boxes),
                                 pipe.classifier.preprocess).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-3


def test_mask_paste_twin_matches_torch():
    from vehicle_cls.cropper.postprocess import paste_masks
    from vehicle_cls.onnx.preprocess import paste_masks as paste_np

    rng = np.random.default_rng(2)
    probs = rng.random((4, 28, 28), dtype=np.float32)
    boxes = np.array([[3.2, 4.7, 50.1, 40.0], [0, 0, 80, 60], [70.5, 50.5, 79.9, 59.9], [-5, 10, 20, 70]], np.float32)
    want = paste_masks(torch.from_numpy(probs), torch.from_numpy(boxes), 60, 80, 0.5, per_box=True).numpy()
    got = paste_np(probs, boxes, 60, 80, 0.5)
    assert (got != want).mean() < 1e-3


@pytest.mark.parametrize("fmt, out", [("onnx", "m.pt"), ("torchscript", "m.onnx"), ("torchscript", "exportdir")])
def test_wrong_suffix_is_an_error_before_exporting(tmp_path, capsys, fmt, out):
    assert main(["export", "--model", str(tmp_path / "no-bundle"), "--format", fmt, "--out", str(tmp_path / out)]) == 2
    err = capsys.readouterr().err
    assert "error: --out" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / out).exists()


def test_bundle_without_cropper_exports_and_classifies_whole_images(tmp_path, images):
    """No detector: the export directory holds the crop op and the classifier; whole images are classified."""
    from vehicle_cls.export.pipeline import check_pipeline, export_pipeline
    from vehicle_cls.onnx import Pipeline as OnnxPipeline

    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=CLASSES, weights=None,
                            preprocess=Preprocess(input_size=96, resize="center_crop"))
    with torch.no_grad():
        clf.model.fc[-1].weight.mul_(20)
    pipe = Pipeline(None, clf, device="cpu", precision="fp32")
    out = export_pipeline(pipe, tmp_path / "export")
    assert not (out / "detector.onnx").exists()
    check = check_pipeline(pipe, out, images)
    assert check.ok and check.images == 3 and len(check.broken) == 1 and check.max_prob_diff < 1e-4, check
    got, want = OnnxPipeline.load(out)(images[:3]), pipe(images[:3])
    assert [r.best.label for r in got] == [r.best.label for r in want]
    assert all(r.best.box is None and not r.best.fallback for r in got)
