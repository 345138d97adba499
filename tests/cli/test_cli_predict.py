"""`vehicle-cls predict` end to end on real photos mixed with broken files: JSON Lines, exit codes,
annotated images, and the same predictions as the Python API."""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vehicle_cls.classifier import Classifier, Preprocess
from vehicle_cls.cli import EXIT_OK, EXIT_SOME_INPUTS_FAILED, SUBCOMMANDS
from vehicle_cls.testing.stand_ins import StandInCropper

PHOTOS = Path(__file__).parents[1] / "data" / "predict"
CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]
# the predict subcommand alone (the dispatcher imports every subcommand module, some owned by others)
PREDICT_ONLY = (
    "import argparse, sys; from vehicle_cls.cli import predict; "
    "p = argparse.ArgumentParser(prog='vehicle-cls'); predict.register(p.add_subparsers()); "
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    clf = Classifier.create("resnet18", classes=CLASSES, preprocess=Preprocess(40, "letterbox"), device="cpu")
    directory = tmp_path_factory.mktemp("model")
    clf.save(directory)
    return directory


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(PHOTOS.glob("*.jpg")):
        shutil.copy(p, folder / p.name)
    (folder / "aa_empty.jpg").write_bytes(b"")
    data = (PHOTOS / "car5.jpg").read_bytes()
    (folder / "zz_truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.jpg").write_text("hello")
    return folder


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PREDICT_ONLY, "predict", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def test_cli_end_to_end_jsonl_exit_code_and_same_as_python(model_dir, mixed_folder, tmp_path):
    out, vis = tmp_path / "out" / "preds.jsonl", tmp_path / "vis"
    missing = tmp_path / "missing.png"
    run = _cli(str(mixed_folder), str(missing), "--model", str(model_dir), "--out", str(out), "--topk", "3",
               "--batch-size", "2", "--save-vis", str(vis), "--no-progress", cwd=tmp_path)
    assert run.returncode == EXIT_SOME_INPUTS_FAILED, run.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    names = sorted(p.name for p in mixed_folder.iterdir())
    assert [Path(d["source"]).name for d in lines] == names + ["missing.png"]  # folder sorted, then the file
    by_name = {Path(d["source"]).name: d for d in lines}
    for bad, reason in (("aa_empty.jpg", "empty file"), ("zz_truncated.jpg", "truncated"),
                        ("notes.jpg", "not a recognised image format"), ("missing.png", "no such file")):
        assert reason in by_name[bad]["error"] and by_name[bad]["vehicles"] == []
    good = [d for d in lines if d["error"] is None]
    assert len(good) == 4
    for d in good:
        (v,) = d["vehicles"]
        assert v["label"] in CLASSES and len(v["topk"]) == 3 and v["topk"][0] == [v["label"], v["score"]]
        assert d["image_size"] == [100, 100] and v["box"] is None
    assert "8 inputs, 4 failed, 4 vehicles" in run.stderr
    # the same predictions from Python, in this process
    from vehicle_cls.pipeline import Pipeline

    preds = Pipeline.load(model_dir)([mixed_folder, missing], topk=3)
    assert len(preds) == len(lines)
    for pred, d in zip(preds, lines):
        py = pred.to_dict()
        assert (py["source"], py["error"], len(py["vehicles"])) == (d["source"], d["error"], len(d["vehicles"]))
        for pv, dv in zip(py["vehicles"], d["vehicles"]):
            assert pv["label"] == dv["label"] and [n for n, _ in pv["topk"]] == [n for n, _ in dv["topk"]]
            for (_, a), (_, b) in zip(pv["topk"], dv["topk"]):
                assert a == pytest.approx(b, abs=2e-6)
    # one annotated image per good input
    saved = sorted(p.name for p in vis.iterdir())
    assert saved == ["car5.jpg", "minibus5.jpg", "pickup5.jpg", "truck5.jpg"]
    assert Image.open(vis / "car5.jpg").size == (100, 100)


def test_cli_all_good_exits_zero_and_writes_jsonl_to_stdout(model_dir, capsys):
    photos = [str(PHOTOS / "car5.jpg"), str(PHOTOS / "truck5.jpg")]
    args = _args(paths=photos, **{"--model": str(model_dir), "--topk": "2"})
    assert args.func(args) == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # not a terminal: JSON Lines
    assert [d["source"] for d in lines] == photos
    assert all(d["error"] is None and len(d["vehicles"][0]["topk"]) == 2 for d in lines)


def _args(**kw) -> argparse.Namespace:
    from vehicle_cls.cli import predict

    parser = argparse.ArgumentParser()
    predict.register(parser.add_subparsers())
    return parser.parse_args(["predict", *kw.pop("paths"), *[x for k, v in kw.items() for x in (k, v)]])


def test_without_model_a_clear_error(capsys):
    args = _args(paths=["x.jpg"])
    assert args.func(args) == 2
    assert "--model DIR is required" in capsys.readouterr().err


def test_bad_model_dir_is_an_error_not_a_traceback(tmp_path, capsys):
    from vehicle_cls.classifier import BundleError

    args = _args(paths=["x.jpg"], **{"--model": str(tmp_path)})
    with pytest.raises(BundleError, match="config.json missing"):  # the dispatcher turns it into exit 1
        args.func(args)


def test_table_on_a_terminal(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    args = _args(paths=[str(PHOTOS / "car5.jpg"), str(tmp_path / "gone.jpg")], **{"--model": str(model_dir)})
    assert args.func(args) == EXIT_SOME_INPUTS_FAILED
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["source", "label", "score"]
    assert "car5.jpg" in out[1] and out[1].split()[1] in CLASSES
    assert "ERROR" in out[2] and "no such file" in out[2]


@pytest.mark.skipif(
    not all(importlib.util.find_spec(f"vehicle_cls.cli.{name}") for name in SUBCOMMANDS),
    reason="not every vehicle-cls subcommand module exists yet",
)
def test_real_dispatcher_runs_predict(model_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "vehicle_cls", "predict", str(PHOTOS / "car5.jpg"),
                          "--model", str(model_dir)], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert run.returncode == EXIT_OK, run.stderr
    assert json.loads(run.stdout.splitlines()[0])["vehicles"][0]["label"] in CLASSES
    bad = subprocess.run([sys.executable, "-m", "vehicle_cls", "predict", "x.jpg", "--model", str(tmp_path)],
                         capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert bad.returncode == 1 and "config.json missing" in bad.stderr


def test_unavailable_cropper_suggests_no_crop(model_dir, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    shutil.copytree(model_dir, bundle)
    config = json.loads((bundle / "config.json").read_text())
    config["cropper"] = {"config": "faster_rcnn_R_101_FPN_3x", "weights": str(tmp_path / "gone.pkl")}
    (bundle / "config.json").write_text(json.dumps(config))
    args = _args(paths=[str(PHOTOS / "car5.jpg")], **{"--model": str(bundle)})
    with pytest.raises(RuntimeError, match=r"cannot build the bundle's cropper: .*gone\.pkl.*--no-crop"):
        args.func(args)
    args = _args(paths=[str(PHOTOS / "car5.jpg"), "--no-crop"], **{"--model": str(bundle)})
    assert args.func(args) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["vehicles"][0]["box"] is None


class StreetCropper(StandInCropper):
    """Stands in for the bundle's detector: three vehicles in every image."""

    def __init__(self):
        from vehicle_cls.cropper import CropPolicy

        self.policy = CropPolicy(select="all")

    def detect(self, images, batch_size=None):
        from vehicle_cls.results import Detections

        boxes = [[2, 2, 40, 30], [50, 10, 90, 60], [10, 55, 60, 95]]
        return [Detections(boxes, [0.9, 0.8, 0.7], [2, 7, 5], image_size=im.shape[:2]) for im in images]


@pytest.fixture()
def street_bundle(model_dir, tmp_path, monkeypatch):
    from vehicle_cls import cropper as cropper_pkg

    bundle = tmp_path / "street_bundle"
    shutil.copytree(model_dir, bundle)
    config = json.loads((bundle / "config.json").read_text())
    config["cropper"] = {"config": "faster_rcnn_R_101_FPN_3x", "weights": "faster_rcnn_R_101_FPN_3x"}
    (bundle / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(cropper_pkg.Cropper, "from_config", staticmethod(lambda d, device="cpu", **kw: StreetCropper()))
    return bundle


def test_street_frame_one_line_with_every_vehicle_and_one_annotated_image(street_bundle, tmp_path, capsys):
    out, vis = tmp_path / "preds.jsonl", tmp_path / "vis"
    args = _args(paths=[str(PHOTOS / "car5.jpg")], **{"--model": str(street_bundle), "--out": str(out),
                                                      "--save-vis": str(vis)})
    assert args.func(args) == EXIT_OK
    (line,) = out.read_text().splitlines()
    d = json.loads(line)
    assert [v["detection"]["class_name"] for v in d["vehicles"]] == ["car", "truck", "bus"]
    assert [v["box"] for v in d["vehicles"]] == [[2, 2, 40, 30], [50, 10, 90, 60], [10, 55, 60, 95]]
    assert [p.name for p in vis.iterdir()] == ["car5.jpg"]  # one annotated image for the one input
    drawn = np.asarray(Image.open(vis / "car5.jpg"), dtype=np.int16)
    original = np.asarray(Image.open(PHOTOS / "car5.jpg").convert("RGB"), dtype=np.int16)
    for x1, y1, x2, y2 in ([2, 2, 40, 30], [50, 10, 90, 60], [10, 55, 60, 95]):  # every box outline is drawn
        assert np.abs(drawn[(y1 + y2) // 2, x2] - original[(y1 + y2) // 2, x2]).sum() > 60


def test_video_in_gives_an_annotated_video_out(street_bundle, tmp_path):
    cv2 = pytest.importorskip("cv2")
    frames = [np.asarray(Image.open(PHOTOS / name).convert("RGB")) for name in ("car5.jpg", "truck5.jpg")] * 3
    video = tmp_path / "clips" / "street.mp4"
    video.parent.mkdir()
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 6, (100, 100))
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    out, vis = tmp_path / "preds.jsonl", tmp_path / "vis"
    args = _args(paths=[str(video.parent), "--frame-stride", "2"],
                 **{"--model": str(street_bundle), "--out": str(out), "--save-vis": str(vis)})
    assert args.func(args) == EXIT_OK
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(d["frame"], d["timestamp"], len(d["vehicles"])) for d in lines] == [(0, 0.0, 3), (2, 0.333333, 3),
                                                                                  (4, 0.666667, 3)]
    assert [p.name for p in vis.iterdir()] == ["street.mp4"]
    cap = cv2.VideoCapture(str(vis / "street.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(3.0)  # the source rate over the frame stride
    written = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        written.append(f)
    cap.release()
    assert len(written) == 3 and written[0].shape == (100, 100, 3)


# ---- --max-decode-side -----------------------------------------------------------------------------
@pytest.fixture()
def bright_bundle(model_dir, tmp_path, monkeypatch):
    from big_jpeg import with_bright_cropper, write_big_jpeg

    bundle = tmp_path / "bright_bundle"
    shutil.copytree(model_dir, bundle)
    cropper = with_bright_cropper(bundle, monkeypatch)
    from vehicle_cls.pipeline import Pipeline

    made = []
    real_init = Pipeline.__init__

    def spy(self, *a, **kw):
        real_init(self, *a, **kw)
        made.append(self)

    monkeypatch.setattr(Pipeline, "__init__", spy)
    return bundle, write_big_jpeg(tmp_path / "big.jpg"), cropper, made


@pytest.mark.parametrize("option, side, decoded", [
    (None, "default", (2000, 3200)),  # 4096 > 3200: full size
    ("1000", 1000, (1000, 1600)),     # 1/2 scale keeps the longer side >= 1000
    ("500", 500, (500, 800)),         # 1/4
    ("none", None, (2000, 3200)),
    ("0", None, (2000, 3200)),
    ("00", None, (2000, 3200)),
])
def test_max_decode_side_reaches_the_pipeline_and_results_stay_in_original_pixels(bright_bundle, tmp_path, option,
                                                                                   side, decoded):
    from big_jpeg import BIG_H, BIG_W, BRIGHT

    from vehicle_cls.options import DEFAULT_MAX_DECODE_SIDE

    bundle, big, cropper, made = bright_bundle
    out = tmp_path / "preds.jsonl"
    extra = {} if option is None else {"--max-decode-side": option}
    args = _args(paths=[str(big)], **{"--model": str(bundle), "--out": str(out), "--num-workers": "0"}, **extra)
    assert args.func(args) == EXIT_OK
    (pipe,) = made
    assert pipe.options.max_decode_side == (DEFAULT_MAX_DECODE_SIDE if side == "default" else side)
    assert cropper.shapes == [decoded]  # the detector saw the reduced image ...
    (d,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert d["error"] is None and d["image_size"] == [BIG_H, BIG_W]  # ... the result is in original pixels
    scale = BIG_H / decoded[0]
    np.testing.assert_allclose(d["vehicles"][0]["detection"]["box"], BRIGHT, atol=scale)
    np.testing.assert_allclose(d["vehicles"][0]["box"], BRIGHT, atol=scale)


@pytest.mark.parametrize("bad", ["-1", "abc", "1.5", "\u00b2", ""])
def test_bad_max_decode_side_is_one_line(model_dir, bad, capsys):
    args = _args(paths=[str(PHOTOS / "car5.jpg")], **{"--model": str(model_dir), "--max-decode-side": bad})
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err == f"vehicle-cls predict: error: --max-decode-side must be a whole number (>= 1) or none; got {bad!r}\n"


# ---- --decode, --compile, --classifier-batch-size --------------------------------------------------
def test_pipeline_options_reach_the_pipeline(bright_bundle, tmp_path):
    bundle, big, _, made = bright_bundle
    args = _args(paths=[str(big)], **{"--model": str(bundle), "--out": str(tmp_path / "p.jsonl"), "--num-workers": "0",
                                     "--decode": "cpu", "--classifier-batch-size": "3"})
    assert args.func(args) == EXIT_OK
    (pipe,) = made
    assert pipe.options.decode == "cpu" and pipe.options.classifier_batch_size == 3
    assert pipe.classifier.backend.compile_mode is None  # eager unless asked


@pytest.mark.parametrize("argv, expected", [
    ([], {}),
    (["--compile"], {"compile": "default"}),
    (["--compile", "reduce-overhead", "--decode", "device"], {"decode": "device", "compile": "reduce-overhead"}),
    (["--classifier-batch-size", "64"], {"classifier_batch_size": 64}),
    (["--no-crop", "--no-channels-last", "--topk", "2", "--precision", "fp32", "--device", "cpu"],
     {"crop": False, "channels_last": False, "topk": 2, "precision": "fp32", "device": "cpu"}),
])
def test_option_flags_are_derived_from_inference_options(argv, expected):
    from vehicle_cls.cli.options import options_from_args
    from vehicle_cls.options import InferenceOptions

    assert options_from_args(_argv("x.jpg", "--model", "m", *argv)) == InferenceOptions(**expected)


@pytest.mark.parametrize("argv, message", [
    (["--compile", "fast"], "--compile must be True, False or one of"),
    (["--classifier-batch-size", "0"], "--classifier-batch-size must be >= 1 or None, not 0"),
    (["--batch-size", "0"], "--batch-size must be >= 1, not 0"),
    (["--batch-size", "-1"], "--batch-size must be >= 1, not -1"),
    (["--topk", "0"], "--topk must be >= 1, not 0"),
    (["--frame-stride", "0"], "--frame-stride must be >= 1, not 0"),
])
def test_bad_pipeline_options_are_one_line(model_dir, argv, message, capsys):
    args = _argv(str(PHOTOS / "car5.jpg"), "--model", str(model_dir), *argv)
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("vehicle-cls predict: error: ") and message in err and err.count("\n") == 1


def _argv(*argv: str) -> argparse.Namespace:
    from vehicle_cls.cli import predict

    parser = argparse.ArgumentParser()
    predict.register(parser.add_subparsers())
    return parser.parse_args(["predict", *argv])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_out_csv_and_parquet_one_flat_row_per_vehicle(model_dir, mixed_folder, tmp_path, suffix):
    """--out x.csv / x.parquet: Result.to_rows() with results.ROW_FIELDS columns; failed inputs keep a row."""
    from vehicle_cls.pipeline import Pipeline
    from vehicle_cls.results import ROW_FIELDS

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"preds{suffix}"
    run = _cli(str(mixed_folder), "--model", str(model_dir), "--out", str(out), "--no-progress", cwd=tmp_path)
    assert run.returncode == EXIT_SOME_INPUTS_FAILED, run.stderr
    assert f"results in {out}" in run.stderr
    if suffix == ".csv":
        import csv

        with open(out, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            assert tuple(reader.fieldnames) == tuple(name for name, _ in ROW_FIELDS)
            rows = list(reader)
        get = lambda row, key: row[key] or None  # noqa: E731 - CSV writes None as an empty cell
    else:
        import pyarrow.parquet as pq

        from vehicle_cls.results import arrow_schema

        table = pq.read_table(out)
        assert table.schema.equals(arrow_schema("vehicle"))
        rows = table.to_pylist()
        get = lambda row, key: row[key]  # noqa: E731
    expected = [row for r in Pipeline.load(model_dir)([mixed_folder]) for row in r.to_rows()]
    assert len(rows) == len(expected) == 7
    for row, want in zip(rows, expected):
        assert get(row, "source") == want["source"] and get(row, "label") == want["label"]
        assert (get(row, "error") is None) == (want["error"] is None)
        if want["score"] is not None:
            assert float(get(row, "score")) == pytest.approx(want["score"], abs=1e-5)


@pytest.mark.parametrize("name, message", [("preds.txt", "unknown output format '.txt'"),
                                           ("preds.jpg", "unknown output format '.jpg'")])
def test_unknown_out_format_is_a_usage_error(model_dir, tmp_path, name, message, capsys):
    args = _args(paths=[str(PHOTOS / "car5.jpg")], **{"--model": str(model_dir), "--out": str(tmp_path / name)})
    assert args.func(args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / name).exists()


def test_parquet_without_pyarrow_names_the_extra(model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    args = _args(paths=[str(PHOTOS / "car5.jpg")], **{"--model": str(model_dir), "--out": str(tmp_path / "p.parquet")})
    assert args.func(args) == 2
    assert "pip install 'vehicle-cls[parquet]'" in capsys.readouterr().err
