"""SampleDataset + DataLoader over real photos mixed with corrupt files: only the corrupt ones are lost."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vehicle_cls.data import Sample, SampleList
from vehicle_cls.data.torch_dataset import FailedSample, SampleDataset, collate_skip_bad

PHOTOS = Path(__file__).parents[1] / "data" / "vehicle_photos"


@pytest.fixture()
def mixed(tmp_path) -> tuple[SampleList, set[int]]:
    good = sorted(PHOTOS.glob("*/*.jpg"))[:8]
    samples = []
    for i, p in enumerate(good):
        dest = tmp_path / f"good{i}.jpg"
        shutil.copy(p, dest)
        samples.append(Sample(str(dest), i % 3))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:300])
    (tmp_path / "text.jpg").write_text("hello")
    (tmp_path / "empty.jpg").write_bytes(b"")
    for pos, name in [(2, "truncated.jpg"), (5, "text.jpg"), (9, "empty.jpg"), (10, "absent.jpg")]:
        samples.insert(pos, Sample(str(tmp_path / name), 1))
    bad = {i for i, s in enumerate(samples) if not s.path.split("/")[-1].startswith("good")}
    return SampleList(samples, ["a", "b", "c"], "mixed"), bad


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_drops_only_corrupt_files_and_counts_them(mixed, num_workers):
    ds, bad = mixed
    resize = lambda t: torch.nn.functional.interpolate(t[None].float(), size=(32, 32))[0]  # noqa: E731
    loader = DataLoader(SampleDataset(ds, resize), batch_size=3, num_workers=num_workers, collate_fn=collate_skip_bad)
    seen, failed = [], []
    for images, labels, indices, fails in loader:
        assert images.shape == (len(labels), 3, 32, 32)
        assert labels.tolist() == [ds[int(i)].label for i in indices]
        seen += indices.tolist()
        failed += fails
    assert sorted(seen) == sorted(set(range(len(ds))) - bad)
    assert len(failed) == 4 and {f.index for f in failed} == bad
    assert all(isinstance(f, FailedSample) and f.path == ds[f.index].path for f in failed)
    reasons = {Path(f.path).name: f.reason for f in failed}
    assert "truncated" in reasons["truncated.jpg"] and "no such file" in reasons["absent.jpg"]
    assert "empty file" in reasons["empty.jpg"]


def test_item_is_uint8_chw_of_the_photo(mixed):
    ds, _ = mixed
    image, label, index = SampleDataset(ds)[0]
    expected = np.asarray(Image.open(ds[0].path).convert("RGB"))
    assert image.dtype == torch.uint8 and image.shape == (3, *expected.shape[:2])
    assert np.array_equal(image.permute(1, 2, 0).numpy(), expected)
    assert (label, index) == (ds[0].label, 0)
    assert isinstance(SampleDataset(ds, input_format="pil")[0][0], Image.Image)


def test_gt_crop_is_the_box_slice(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    devkit = SampleList([Sample(str(tmp_path / "a.png"), 0, (11, 5, 30, 22))], ["x"], box_format="devkit")
    xyxy = SampleList([Sample(str(tmp_path / "a.png"), 0, (11, 5, 30, 22))], ["x"], box_format="xyxy")
    got = SampleDataset(devkit, crop="gt", input_format="numpy")[0][0]
    assert np.array_equal(got, pixels[4:22, 10:30])  # inclusive 1-based devkit box
    got = SampleDataset(xyxy, crop="gt", input_format="numpy")[0][0]
    assert np.array_equal(got, pixels[5:22, 11:30])


def test_all_bad_batch_gives_empty_tensors(tmp_path):
    ds = SampleList([Sample(str(tmp_path / "nope.jpg"), 0)], ["x"])
    batch = collate_skip_bad([SampleDataset(ds)[0]])
    assert batch.images.numel() == 0 and batch.labels.tolist() == [] and len(batch.failed) == 1
