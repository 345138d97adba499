"""The crop cache under faults (issue 17, principles 4 and 9): a full disk stops the run and the rerun completes,
a bad manifest line is that line, a garbage cache.json or an output at a file is one clear error."""
from __future__ import annotations

import errno
import json
import logging
import shutil

import pytest
from dataset_files import CLASSES, class_folders, first_photo


def test_crop_out_at_a_file_is_one_line(tmp_path):
    from vehicle_cls.data import CropCache, open_dataset

    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(ValueError, match="crop cache folder .*blocker is a file") as info:
        CropCache(blocker).build(open_dataset(class_folders(tmp_path / "d", 1), "folders"), mode="gt")
    assert "Errno" not in str(info.value)


def test_disk_full_during_crop_stops_and_the_rerun_completes(tmp_path, monkeypatch, caplog):
    from vehicle_cls.data import CropCache, open_dataset

    data = class_folders(tmp_path / "d", 4)
    ds = open_dataset(data, "folders")
    real_save, calls = CropCache._save, []

    def save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(CropCache, "_save", save)
    cache = CropCache(tmp_path / "crops")
    with pytest.raises(Exception, match="(?i)no space"):
        cache.build(ds, mode="gt")
    monkeypatch.setattr(CropCache, "_save", real_save)
    stats = cache.build(ds, mode="gt")
    assert stats.failed == 0 and stats.cropped == len(ds) - 5
    assert len(cache.dataset()) == len(ds)

    # a manifest written by the old code, with transient errors recorded as failures: retried
    old = CropCache(tmp_path / "old")
    old.build(ds, mode="gt")
    lines = old.manifest_path.read_text().splitlines()
    broken = [{**json.loads(x), "file": None, "error": "OSError: [Errno 28] No space left on device"} for x in lines[:3]]
    old.manifest_path.write_text("\n".join([*lines[3:], *map(json.dumps, broken)]) + "\n")
    with caplog.at_level(logging.WARNING):
        assert len(old.dataset()) == len(ds) - 3
    assert "3" in caplog.text  # the missing ones are reported
    assert old.build(ds, mode="gt").cropped == 3
    assert len(old.dataset()) == len(ds)


def test_manifest_bad_lines_and_garbage_cache_json(tmp_path, caplog):
    from vehicle_cls.data import CropCache, DatasetError

    root = tmp_path / "c"
    (root / "crops").mkdir(parents=True)
    shutil.copy(first_photo(), root / "crops" / "a.jpg")
    (root / "cache.json").write_text(json.dumps({"version": 1, "mode": "gt", "classes": CLASSES}))
    (root / "manifest.jsonl").write_text("\n".join([
        json.dumps({"source": "a.jpg", "label": 0, "file": "crops/a.jpg"}),
        json.dumps([1, 2, 3]),
        json.dumps({"source": "b.jpg", "label": "abc", "file": "crops/a.jpg"}),
        json.dumps({"source": "c.jpg", "label": 1, "file": "crops/a.jpg"}),
        json.dumps({"source": "d.jpg", "label": 99, "file": "crops/a.jpg"}),
    ]) + "\n")
    with caplog.at_level(logging.WARNING):
        ds = CropCache(root).dataset()
    assert [s.label for s in ds] == [0, 1]
    assert "manifest.jsonl: row 2" in caplog.text or "manifest.jsonl:2" in caplog.text
    assert "row 3" in caplog.text or "manifest.jsonl:3" in caplog.text
    assert "label 99 is not one of the 3 classes" in caplog.text
    (root / "cache.json").write_text("\x00garbage{")
    with pytest.raises(DatasetError, match="cache.json") as info:
        CropCache(root).dataset()
    assert "Expecting value" not in str(info.value) or "cache.json" in str(info.value)
    assert "\n" not in str(info.value)


def test_an_unreadable_photo_with_several_annotations_is_one_failure_each(tmp_path):
    """Each annotated vehicle of a photo that cannot be decoded is recorded once as failed (not once per
    attempt), in both modes, and the rest of the dataset is cropped."""
    from vehicle_cls.cropper.policy import CropPolicy
    from vehicle_cls.data import CropCache, Sample, SampleList
    from vehicle_cls.results import Detections

    class NoVehicles:
        policy = None

        def detect(self, images, batch_size=None):
            return [Detections.empty(image.shape[:2]) for image in images]

        def to_config(self):
            return {"config": "none"}

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    good = str(first_photo())
    ds = SampleList(
        [Sample(str(broken), 0, (0, 0, 5, 5)), Sample(str(broken), 1, (5, 5, 9, 9)), Sample(str(broken), 0, (1, 1, 4, 4)),
         Sample(good, 1, (2, 2, 30, 30))],
        ["car", "truck"], "broken", box_format="xyxy", split="train",
    )
    for mode in ("gt", "detector"):
        cache = CropCache(tmp_path / mode)
        stats = cache.build(ds, NoVehicles(), mode=mode, policy=CropPolicy())
        assert (stats.failed, stats.cropped) == (3, 1), mode
        lines = cache.manifest_path.read_text().splitlines()
        assert len(lines) == 4 and sum("broken.jpg" in line for line in lines) == 3
