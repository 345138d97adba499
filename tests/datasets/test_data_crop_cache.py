"""The crop cache with a fake cropper (hand-made Detections): manifest, resume, crash safety, GT crops, CLI."""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vehicle_cls.data import ClassFolders, CropCache, DatasetError, Sample, SampleList, open_dataset
from vehicle_cls.io.images import load_image
from vehicle_cls.results import Detections

PHOTOS = Path(__file__).parents[1] / "data" / "vehicle_photos"
policy_mod = pytest.importorskip("vehicle_cls.cropper.policy")
CropPolicy = policy_mod.CropPolicy

CAR, BUS, TRUCK = 2, 5, 7  # contiguous COCO ids


def digest(image: np.ndarray) -> str:
    return hashlib.md5(np.ascontiguousarray(image).tobytes()).hexdigest()


class FakeCropper:
    """Follows the Cropper contract: ``detect(list of arrays) -> list[Detections]``, ``.policy``, ``to_config()``."""

    def __init__(self, table: dict[str, tuple], crash_on_call: int | None = None):
        self.table = table  # image digest -> (boxes, scores, classes)
        self.policy = CropPolicy(classes=("car", "truck", "bus"), min_score=0.5, select="largest")
        self.calls = 0
        self.images_seen = 0
        self.crash_on_call = crash_on_call

    def detect(self, images, batch_size=None):
        self.calls += 1
        if self.crash_on_call is not None and self.calls == self.crash_on_call:
            raise RuntimeError("simulated crash inside the detector")
        out = []
        for image in images:
            self.images_seen += 1
            boxes, scores, classes = self.table.get(digest(image), (np.zeros((0, 4)), [], []))
            out.append(Detections(boxes, scores, classes, image_size=image.shape[:2]))
        return out

    def to_config(self):
        return {"config": "fake", "weights": "hand-made"}


@pytest.fixture()
def dataset(tmp_path) -> tuple[SampleList, FakeCropper]:
    root = tmp_path / "photos"
    for cls in ("car", "truck"):
        (root / cls).mkdir(parents=True)
        for p in sorted((PHOTOS / cls).glob("*.jpg"))[:3]:
            shutil.copy(p, root / cls / p.name)
    (root / "truck" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = ClassFolders(root)
    pix = {Path(s.path).name: load_image(s.path) for s in ds if "broken" not in s.path}
    table = {
        # car1: a car and a larger truck above the threshold -> the truck (largest) is cropped
        digest(pix["car1.jpg"]): ([[10, 20, 60, 70], [0, 5, 90, 80]], [0.9, 0.6], [CAR, TRUCK]),
        # car2: only a weak car -> nothing passes 0.5 -> whole image (fallback)
        digest(pix["car2.jpg"]): ([[10, 10, 40, 40]], [0.3], [CAR]),
        # truck1: a bus, and a person (class 0) that must be ignored
        digest(pix["truck1.jpg"]): ([[5, 6, 50, 52], [0, 0, 100, 100]], [0.95, 0.99], [BUS, 0]),
    }
    return ds, FakeCropper(table)


def read_manifest(cache_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (cache_dir / "manifest.jsonl").read_text().splitlines()]


def test_detector_mode_manifest_and_crops(dataset, tmp_path):
    ds, cropper = dataset
    out = tmp_path / "cache"
    stats = CropCache(out).build(ds, cropper, batch_size=1, image_format="png")
    assert (stats.total, stats.cropped, stats.failed, stats.already_done, stats.fallback) == (7, 6, 1, 0, 4)
    assert cropper.calls == 6  # the broken file never reaches the detector
    lines = {Path(e["source"]).name: e for e in read_manifest(out)}
    assert len(lines) == 7 and len(read_manifest(out)) == 7

    car1 = lines["car1.jpg"]
    assert car1["box"] == [0.0, 5.0, 90.0, 80.0]
    assert (car1["detector_class"], car1["detector_class_id"], car1["detector_score"]) == ("truck", TRUCK, 0.6)
    assert car1["fallback"] is False and car1["error"] is None and car1["label"] == 0 and car1["mode"] == "detector"
    original = load_image(ds[0].path)
    assert np.array_equal(np.asarray(Image.open(out / car1["file"])), original[5:80, 0:90])

    car2 = lines["car2.jpg"]
    assert car2["fallback"] is True and car2["box"] is None and car2["detector_class"] is None
    assert np.array_equal(np.asarray(Image.open(out / car2["file"])), load_image(ds[1].path))

    truck1 = lines["truck1.jpg"]
    assert (truck1["detector_class"], truck1["box"], truck1["label"]) == ("bus", [5.0, 6.0, 50.0, 52.0], 1)

    broken = lines["broken.jpg"]
    assert broken["file"] is None and "broken.jpg" in broken["error"] and "not a recognised image" in broken["error"]

    crops = CropCache(out).dataset()
    assert crops.classes == ["car", "truck"] and len(crops) == 6
    assert sorted(s.label for s in crops) == [0, 0, 0, 1, 1, 1]
    assert len(crops.problems) == 1 and "broken.jpg" in str(crops.problems[0])
    assert open_dataset(out).classes == ["car", "truck"]  # detected as a 'crops' layout


def test_rerun_resumes_and_skips_done_items(dataset, tmp_path):
    ds, cropper = dataset
    out = tmp_path / "cache"
    CropCache(out).build(ds, cropper, batch_size=4)
    again = FakeCropper(cropper.table)
    stats = CropCache(out).build(ds, again, batch_size=4)
    assert again.calls == 0 and stats.already_done == 7 and stats.cropped == 0
    assert len(read_manifest(out)) == 7
    # retry_errors re-attempts only the failed item (which fails again, without the detector)
    stats = CropCache(out).build(ds, again, retry_errors=True)
    assert again.calls == 0 and stats.failed == 1 and stats.already_done == 6


def test_crash_mid_run_leaves_a_valid_manifest_and_rerun_finishes(dataset, tmp_path):
    ds, cropper = dataset
    out = tmp_path / "cache"
    crashing = FakeCropper(cropper.table, crash_on_call=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        CropCache(out).build(ds, crashing, batch_size=1)
    done = read_manifest(out)  # every line parses
    assert [Path(e["source"]).name for e in done] == ["car1.jpg", "car2.jpg"]
    assert all((out / e["file"]).is_file() for e in done)
    assert not list(out.rglob("*.tmp"))

    # a torn line (killed mid-write) is cut off on the next run
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"source": "/half/written')
    resumed = FakeCropper(cropper.table)
    stats = CropCache(out).build(ds, resumed, batch_size=1)
    assert resumed.images_seen == 4 and stats.already_done == 2 and stats.cropped + stats.failed == 5
    final = read_manifest(out)
    assert sorted(Path(e["source"]).name for e in final) == sorted(Path(s.path).name for s in ds)


def test_gt_mode_crops_equal_numpy_slicing(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(pixels).save(tmp_path / name)
    ds = SampleList(
        [
            Sample(str(tmp_path / "a.png"), 0, (11, 5, 30, 22)),   # devkit: inclusive, 1-based
            Sample(str(tmp_path / "b.png"), 1, None),              # no box: whole image
            Sample(str(tmp_path / "c.png"), 1, (70, 50, 90, 60)),  # outside the 60x40 image
        ],
        ["x", "y"], "gt-test", box_format="devkit", split="train",
    )
    out = tmp_path / "cache"
    stats = CropCache(out).build(ds, mode="gt", image_format="png")
    assert (stats.cropped, stats.failed, stats.fallback) == (2, 1, 1)
    lines = {Path(e["source"]).name: e for e in read_manifest(out)}
    assert np.array_equal(np.asarray(Image.open(out / lines["a.png"]["file"])), pixels[4:22, 10:30])
    assert lines["a.png"]["box"] == [10.0, 4.0, 30.0, 22.0] and lines["a.png"]["mode"] == "gt"
    assert np.array_equal(np.asarray(Image.open(out / lines["b.png"]["file"])), pixels)
    assert lines["b.png"]["fallback"] is True
    assert "does not overlap" in lines["c.png"]["error"]
    # the cache serves SampleDataset as a crop source
    from vehicle_cls.data.torch_dataset import SampleDataset

    item = SampleDataset(ds, crop=CropCache(out), input_format="numpy")[0][0]
    assert np.array_equal(item, pixels[4:22, 10:30])
    assert CropCache(out).dataset(split="train").split == "train" and len(CropCache(out).dataset(split="val")) == 0
    # other settings in the same folder are refused instead of mixing crops
    with pytest.raises(DatasetError, match=r"different settings \(mode, cropper, policy, image_format\)"):
        CropCache(out).build(ds, FakeCropper({}), mode="detector")


def test_gt_mode_keeps_one_crop_per_annotated_vehicle_of_an_image(tmp_path):
    """Two annotated vehicles in one photo (COCO, CSV with several rows per image): two crops, each served
    for its own sample, and a rerun finds both done (the manifest key is the image and its box)."""
    from vehicle_cls.data.torch_dataset import SampleDataset

    pixels = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "street.png")
    street = str(tmp_path / "street.png")
    ds = SampleList(
        [Sample(street, 0, (0, 0, 20, 30)), Sample(street, 1, (30, 10, 60, 40))],
        ["car", "bus"], "two-vehicles", box_format="xyxy", split="train",
    )
    cache = CropCache(tmp_path / "cache")
    assert cache.build(ds, mode="gt", image_format="png").cropped == 2
    served = SampleDataset(ds, crop=CropCache(tmp_path / "cache"), input_format="numpy")
    assert np.array_equal(served[0][0], pixels[0:30, 0:20]) and served[0][1] == 0
    assert np.array_equal(served[1][0], pixels[10:40, 30:60]) and served[1][1] == 1
    crops = CropCache(tmp_path / "cache").dataset()
    assert sorted(s.label for s in crops) == [0, 1] and len({s.path for s in crops}) == 2
    again = CropCache(tmp_path / "cache").build(ds, mode="gt", image_format="png")
    assert (again.already_done, again.cropped) == (2, 0)


def test_detector_mode_matches_each_annotated_vehicle_of_a_photo(tmp_path):
    """A photo with a car and a truck annotated (COCO, CSV rows): each annotation's crop is the detection that
    overlaps its box most (the policy's one `largest` pick would give both labels the truck), detected once;
    an annotation the detector missed keeps its own box as a fallback; a one-vehicle photo keeps the policy."""
    from vehicle_cls.data.torch_dataset import SampleDataset

    rng = np.random.default_rng(2)
    street, single = (rng.integers(0, 256, (60, 100, 3), dtype=np.uint8) for _ in range(2))
    Image.fromarray(street).save(tmp_path / "street.png")
    Image.fromarray(single).save(tmp_path / "single.png")
    cropper = FakeCropper({
        digest(street): ([[50, 5, 98, 58], [2, 10, 40, 50], [0, 0, 100, 60]], [0.9, 0.8, 0.99], [TRUCK, CAR, 0]),
        digest(single): ([[10, 10, 30, 30], [5, 5, 80, 55]], [0.9, 0.7], [CAR, TRUCK]),
    })
    path, other = str(tmp_path / "street.png"), str(tmp_path / "single.png")
    ds = SampleList(
        [Sample(path, 0, (4, 12, 38, 49)),      # the car, annotated a little off its detection
         Sample(path, 1, (52, 4, 97, 57)),      # the truck
         Sample(path, 2, (70, 50, 90, 60)),     # a bus the detector missed (no vehicle overlaps 0.5)
         Sample(other, 0, (10, 10, 30, 30))],   # one annotated vehicle: the policy (largest), as at prediction
        ["car", "truck", "bus"], "street", box_format="xyxy", split="train",
    )
    out = tmp_path / "cache"
    stats = CropCache(out).build(ds, cropper, image_format="png")
    assert (stats.cropped, stats.failed) == (4, 0) and cropper.images_seen == 2  # each photo detected once
    served = SampleDataset(ds, crop=CropCache(out), input_format="numpy")
    assert np.array_equal(served[0][0], street[10:50, 2:40])    # the car detection, not the larger truck
    assert np.array_equal(served[1][0], street[5:58, 50:98])    # the truck detection
    assert np.array_equal(served[2][0], street[50:60, 70:90])   # missed: its annotated box
    assert np.array_equal(served[3][0], single[5:55, 5:80])     # the policy's largest, whatever the annotation
    lines = read_manifest(out)
    assert [(e["detector_class"], e["fallback"]) for e in lines[-3:]] == [("car", False), ("truck", False), (None, True)]
    again = CropCache(out).build(ds, cropper, image_format="png")
    assert (again.already_done, again.cropped, cropper.images_seen) == (4, 0, 2)


def test_jpeg_quality_95_by_default(tmp_path):
    Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(tmp_path / "a.png")
    ds = SampleList([Sample(str(tmp_path / "a.png"), 0, (1, 1, 10, 10))], ["x"])
    CropCache(tmp_path / "c").build(ds, mode="gt")
    entry = read_manifest(tmp_path / "c")[0]
    with Image.open(tmp_path / "c" / entry["file"]) as im:
        assert im.format == "JPEG" and im.size == (10, 10)


def test_cli_gt_and_detector_modes(dataset, tmp_path, monkeypatch, capsys, cli):
    ds, cropper = dataset
    root = Path(ds.root)
    code = cli(*["crop", str(root), "--out", str(tmp_path / "gt"), "--mode", "gt", "--no-progress"])
    assert code == 3  # the broken image is reported, the rest are cropped
    out = capsys.readouterr().out
    assert "6 cropped now" in out and "1 failed" in out and "broken.jpg" in out
    assert len(read_manifest(tmp_path / "gt")) == 7

    from vehicle_cls.cli import crop as crop_cli

    made = []
    monkeypatch.setattr(crop_cli, "_cropper", lambda args: made.append(args) or cropper)
    code = cli(*["crop", str(root), "--out", str(tmp_path / "det"), "--zoo", "faster_rcnn_R_101_FPN_3x",
                 "--min-score", "0.4", "--margin", "0.1", "--no-progress"])
    assert code == 3 and made[0].min_score == 0.4 and made[0].margin == 0.1
    assert cropper.calls > 0
    code = cli(*["crop", str(root), "--out", str(tmp_path / "det"), "--no-progress"])  # resume: nothing new
    assert "7 already done" in capsys.readouterr().out


def test_temporaries_of_a_killed_run_are_cleaned_when_the_cache_resumes(dataset, tmp_path):
    import subprocess
    import sys

    from vehicle_cls import fileio

    ds, cropper = dataset
    out = tmp_path / "cache"
    CropCache(out).build(ds, cropper, batch_size=2)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    leftovers = [out / "crops" / f".car9-0123.jpg.{fileio._host_tag()}-{dead}-abcd1234.tmp",
                 out / f".config.json.{fileio._host_tag()}-{dead}-abcd1234.tmp"]
    for path in leftovers:
        path.write_bytes(b"half a file")
    stats = CropCache(out).build(ds, FakeCropper(cropper.table), batch_size=2)
    assert stats.already_done == 7
    assert not any(p.exists() for p in leftovers)
