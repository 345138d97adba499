"""Ray Data batch inference gives Pipeline's own answers, one row per input, bad files included."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own context notices

from vehicle_cls.distributed.ray_inference import (  # noqa: E402
    align_predictions,
    dicts_to_table,
    predict_with_ray,
    table_to_dicts,
)
from vehicle_cls.results import Detection, Prediction  # noqa: E402

PHOTOS = sorted((Path(__file__).parent / "data" / "integrations").glob("*.jpg"))
CLASSES = ["bike", "car", "juggernaut", "minibus", "pickup", "truck"]


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=150 * 2**20)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory):
    """Six real photos, a text file named .jpg and a truncated JPEG."""
    root = tmp_path_factory.mktemp("ray_images")
    for p in PHOTOS:
        shutil.copy(p, root / p.name)
    (root / "broken_text.jpg").write_text("not an image\n")
    (root / "broken_truncated.jpg").write_bytes(PHOTOS[0].read_bytes()[:300])
    return root


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    import torch

    from vehicle_cls.classifier import Classifier, Preprocess

    torch.manual_seed(0)
    clf = Classifier.create("mobilenet_v3_small", classes=CLASSES, weights=None, preprocess=Preprocess(input_size=64))
    return clf.save(tmp_path_factory.mktemp("ray_bundle") / "bundle")


@pytest.fixture(scope="module")
def reference(bundle_dir, images_dir):
    """Pipeline's own outputs, keyed by source path."""
    from vehicle_cls.pipeline import Pipeline

    paths = sorted(str(p) for p in images_dir.iterdir())
    preds = Pipeline.load(bundle_dir, num_workers=0)(paths, topk=3)
    return {p.source: p.to_dict() for p in preds}


def _assert_same(rows: list[dict], reference: dict[str, dict]) -> None:
    assert sorted(r["source"] for r in rows) == sorted(reference)  # one row per input, none lost or doubled
    for row in rows:
        want = reference[row["source"]]
        assert set(row) == set(want)
        if want["error"] is not None:
            assert row["error"] and row["label"] is None and row["topk"] == []
            continue
        assert row["error"] is None
        assert (row["label"], row["class_index"], row["box"], row["image_size"]) == (
            want["label"], want["class_index"], want["box"], want["image_size"],
        )
        assert row["score"] == pytest.approx(want["score"], abs=1e-5)
        assert [name for name, _ in row["topk"]] == [name for name, _ in want["topk"]]
        assert [p for _, p in row["topk"]] == pytest.approx([p for _, p in want["topk"]], abs=1e-5)


def test_paths_to_jsonl_match_pipeline(local_ray, bundle_dir, images_dir, reference, tmp_path):
    paths = sorted(str(p) for p in images_dir.iterdir())
    summary = predict_with_ray(
        paths, bundle_dir, batch_size=3, concurrency=1, topk=3, output=tmp_path / "out.jsonl", preserve_order=True,
    )
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == paths  # preserve_order=True: input order
    assert (summary.rows, summary.failed, summary.format) == (8, 2, "jsonl")
    assert sum(r["error"] is not None for r in rows) == 2
    _assert_same(rows, reference)


def test_uri_bytes_to_parquet_match_pipeline(local_ray, bundle_dir, images_dir, reference, tmp_path):
    """A URI is read as file bytes by Ray (as for s3://) and decoded in the actors; bad files stay rows."""
    summary = predict_with_ray(
        f"local://{images_dir}", bundle_dir, batch_size=4, concurrency=1, topk=3, output=tmp_path / "out.parquet",
    )
    rows = table_to_dicts(pq.read_table(tmp_path / "out.parquet"))
    assert summary.rows == 8 and summary.failed == 2
    _assert_same(rows, reference)


def test_arrow_rows_round_trip_prediction_dicts():
    det = Detection((1.0, 2.0, 30.5, 40.25), 0.9, 2)
    preds = [
        Prediction("a.jpg", "car", 0.75, 1, [("car", 0.75), ("bus", 0.25)], (1.0, 2.0, 30.5, 40.25), det,
                   image_size=(100, 120)),
        Prediction("b.jpg", "bus", 0.5, 0, [("bus", 0.5)], None, None, fallback=True, image_size=(10, 10), frame=3),
        Prediction.failed("c.jpg", "cannot identify image file"),
    ]
    dicts = [p.to_dict() for p in preds]
    assert table_to_dicts(dicts_to_table(dicts)) == dicts


def test_align_keeps_every_input_in_every_vehicle_mode():
    names = ["a.jpg", "b.jpg", "c.jpg"]
    preds = [Prediction("a.jpg", "car", 0.9), Prediction("a.jpg", "bus", 0.8), Prediction("c.jpg", "car", 0.7)]
    rows = align_predictions(preds, names, names)  # b.jpg got no prediction at all
    assert [(r.source, r.label, r.error is not None) for r in rows] == [
        ("a.jpg", "car", False), ("a.jpg", "bus", False), ("b.jpg", None, True), ("c.jpg", "car", False),
    ]
