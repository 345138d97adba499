"""`vehicle-cls export`: ONNX (run by onnxruntime) and TorchScript give PyTorch's probabilities on real photos."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vehicle_cls import Classifier, Pipeline
from vehicle_cls.classifier import Preprocess
from vehicle_cls.cli import main
from vehicle_cls.export import check_export, export_classifier, run_export

DATA = Path(__file__).parents[1] / "data"
PHOTOS = sorted((DATA / "photos").glob("*.jpg")) + sorted((DATA / "predict").glob("*.jpg"))
TOLERANCE = 1e-4  # max abs difference of probabilities (fp32 kernels of different runtimes)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    clf = Classifier.create("resnet18", classes=["bike", "car", "juggernaut", "minibus", "pickup", "truck"],
                            weights=None, preprocess=Preprocess(input_size=96, resize="center_crop"))
    with torch.no_grad():  # a non-uniform head so that the probabilities differ between photos
        clf.model.fc[-1].weight.mul_(20)
    return clf.save(tmp_path_factory.mktemp("export") / "bundle")


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
def test_export_matches_pytorch_on_real_photos(bundle, tmp_path, fmt, suffix):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
    clf = Classifier.load(bundle)
    out = export_classifier(clf, tmp_path / f"model{suffix}", fmt)
    check = check_export(clf, out, PHOTOS)  # 9 photos: another batch size than the export's example (2)
    assert check.images == len(PHOTOS) and check.format == fmt
    assert check.max_abs_diff < TOLERANCE and check.top1_agree == 1.0, check

    # independent of check_export: the whole-image pipeline's top-5 on the same photos
    sidecar = json.loads(Path(str(out) + ".json").read_text())
    assert sidecar["classes"] == clf.classes and sidecar["preprocessing"] == clf.preprocess.to_dict()
    from vehicle_cls.classifier.preprocess import preprocess_images
    from vehicle_cls.io.images import load_image

    batch = preprocess_images([load_image(p) for p in PHOTOS], clf.preprocess, torch.device("cpu")).numpy()
    probs = run_export(out, batch)
    preds = Pipeline(None, clf, device="cpu", precision="fp32")(PHOTOS, topk=6)
    for p, row in zip(preds, probs):
        got = {sidecar["classes"][i]: float(v) for i, v in enumerate(row)}
        for label, prob in p.best.topk:  # one whole-image vehicle per Result
            assert abs(got[label] - prob) < 2e-3, (p.source, label, got[label], prob)
    assert len({int(np.argmax(r)) for r in probs}) > 1  # the photos are told apart, not one constant answer


def test_export_command_writes_and_checks(bundle, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "m.onnx"
    assert main(["export", "--model", str(bundle), "--format", "onnx", "--out", str(out),
                 "--check", *map(str, PHOTOS[:3])]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["images"] == 3 and report["max_abs_diff"] < TOLERANCE
    assert out.exists() and Path(str(out) + ".json").exists()


def test_export_refuses_unknown_format(bundle, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_classifier(Classifier.load(bundle), tmp_path / "m.x", "tflite")


def test_cli_parser_imports_no_serving_or_onnx_libraries():
    """`vehicle-cls --help` builds every subparser (serve, export included) without fastapi/uvicorn/onnx."""
    import subprocess
    import sys

    code = ("import sys, vehicle_cls.cli as c; c.build_parser(); import vehicle_cls.export, vehicle_cls.serve.batcher; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette', 'uvicorn', 'onnx', 'onnxruntime', 'onnxscript', 'httpx')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_check_reports_a_broken_image_and_compares_the_rest(bundle, tmp_path):
    pytest.importorskip("onnxruntime")
    clf = Classifier.load(bundle)
    out = export_classifier(clf, tmp_path / "m.onnx", "onnx")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    check = check_export(clf, out, [PHOTOS[0], broken, PHOTOS[1]])
    assert check.images == 2 and check.max_abs_diff < TOLERANCE
    assert len(check.broken) == 1 and "broken.jpg" in check.broken[0] and "\n" not in check.broken[0]


def test_export_to_a_file_of_another_format_is_refused_up_front(bundle, tmp_path):
    with pytest.raises(ValueError, match=r"\.onnx"):
        export_classifier(Classifier.load(bundle), tmp_path / "m.pt", "onnx")
    assert not (tmp_path / "m.pt").exists()
