"""Ray Data batch inference gives Pipeline's own answers, one row per input, bad files included."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own context notices

from vehicle_cls.distributed.ray_inference import (  # noqa: E402
    dicts_to_table,
    predict_with_ray,
    table_to_dicts,
)
from vehicle_cls.results import Detection, Result, Vehicle  # noqa: E402

PHOTOS = sorted((Path(__file__).parents[1] / "data" / "integrations").glob("*.jpg"))
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
            assert row["error"] and row["vehicles"] == []
            continue
        assert row["error"] is None and row["image_size"] == want["image_size"]
        assert len(row["vehicles"]) == len(want["vehicles"]) == 1
        for got, exp in zip(row["vehicles"], want["vehicles"]):
            assert (got["label"], got["class_index"], got["box"]) == (exp["label"], exp["class_index"], exp["box"])
            assert got["score"] == pytest.approx(exp["score"], abs=1e-5)
            assert [name for name, _ in got["topk"]] == [name for name, _ in exp["topk"]]
            assert [p for _, p in got["topk"]] == pytest.approx([p for _, p in exp["topk"]], abs=1e-5)


def test_paths_to_jsonl_match_pipeline(local_ray, bundle_dir, images_dir, reference, tmp_path):
    paths = sorted(str(p) for p in images_dir.iterdir())
    summary = predict_with_ray(
        paths, bundle_dir, batch_size=3, concurrency=1, topk=3, output=tmp_path / "out.jsonl", preserve_order=True,
    )
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["source"] for r in rows] == paths  # preserve_order=True: input order
    assert [r["index"] for r in rows] == list(range(len(paths)))
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


def test_arrow_rows_round_trip_result_dicts():
    det = Detection((1.0, 2.0, 30.5, 40.25), 0.9, 2)
    results = [
        Result("a.jpg", 0, image_size=(100, 120), vehicles=[
            Vehicle((1.0, 2.0, 30.5, 40.25), det, None, "car", 0.75, 1, [("car", 0.75), ("bus", 0.25)]),
            Vehicle((3.0, 4.0, 50.0, 60.0), det, None, "bus", 0.5, 0, [("bus", 0.5)])]),
        Result("b.mp4", 1, frame=3, timestamp=0.125, image_size=(10, 10),
               vehicles=[Vehicle(None, None, None, "bus", 0.5, 0, [("bus", 0.5)], fallback=True)]),
        Result.failed("c.jpg", 2, "cannot identify image file"),
    ]
    dicts = [r.to_dict() for r in results]
    assert table_to_dicts(dicts_to_table(dicts)) == dicts


def test_rows_become_named_inputs_with_their_row_index():
    """Each row's name and index travel with it into the pipeline (no matching of results by strings)."""
    from vehicle_cls.distributed.ray_inference import batch_inputs
    from vehicle_cls.io.inputs import NamedInput

    batch = {"path": np.array(["s3://b/a.jpg", "s3://b/b.jpg"]), "index": np.array([10, 11]), "bytes": [b"a", b"b"]}
    assert batch_inputs(batch) == [NamedInput("s3://b/a.jpg", b"a", 10), NamedInput("s3://b/b.jpg", b"b", 11)]
    assert batch_inputs({"path": ["x.jpg"]}) == [NamedInput("x.jpg", "x.jpg", 0)]
    with pytest.raises(ValueError, match="needs a 'path', 'bytes' or 'image' column"):
        batch_inputs({"index": [1]})


# ---- rows="vehicle": one flat row per vehicle ------------------------------------------------------
def _stand_in_cropper():
    """A detector stand-in with 0, 1 or 2 vehicles per image (by its mean brightness), no whole-image
    fallback. Defined in a function so Ray pickles the class by value into its actors."""
    from vehicle_cls.cropper import CropPolicy
    from vehicle_cls.testing.stand_ins import StandInCropper

    class MeanCropper(StandInCropper):
        def __init__(self):
            self.policy = CropPolicy(select="all", fallback=False)

        def detect(self, images, batch_size=None):
            from vehicle_cls.results import Detections

            out = []
            for im in images:
                h, w = im.shape[:2]
                n = int(im.mean()) % 3
                boxes = [[0, 0, w // 2, h // 2], [w // 4, h // 4, w, h]][:n]
                out.append(Detections(boxes, [0.9, 0.8][:n], [2, 7][:n], image_size=(h, w)))
            return out

    return MeanCropper()


def _assert_same_rows(got: list[dict], want: list[dict]) -> None:
    key = lambda r: (r["source"], -1 if r["vehicle"] is None else r["vehicle"])  # noqa: E731
    got, want = sorted(got, key=key), sorted(want, key=key)
    assert [key(r) for r in got] == [key(r) for r in want]  # every vehicle, every empty or failed input, once
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for name in w:
            if isinstance(w[name], float):
                assert g[name] == pytest.approx(w[name], abs=1e-5), name
            else:
                assert g[name] == w[name], name


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_vehicle_rows_match_pipeline_to_rows(local_ray, bundle_dir, images_dir, tmp_path, suffix):
    from vehicle_cls.pipeline import Pipeline

    paths = sorted(str(p) for p in images_dir.iterdir())
    results = Pipeline.load(bundle_dir, cropper=_stand_in_cropper(), num_workers=0)(paths, topk=3)
    want = [row for r in results for row in r.to_rows()]
    kinds = sorted(len(r) for r in results)
    assert kinds.count(0) >= 3 and 1 in kinds and 2 in kinds  # failed, empty, one and two vehicles all present
    out = tmp_path / f"vehicles{suffix}"
    summary = predict_with_ray(paths, bundle_dir, batch_size=3, concurrency=1, topk=3, output=out, rows="vehicle",
                               cropper=_stand_in_cropper(), num_workers=0)
    if suffix == ".parquet":
        table = pq.read_table(out)
        assert table.schema.names == list(want[0])  # the columns of to_rows, in its order
        got = table.to_pylist()
    else:
        got = [json.loads(line) for line in out.read_text().splitlines()]
    assert (summary.rows, summary.failed) == (len(want), 2)
    _assert_same_rows(got, want)
    failed = [r for r in got if r["error"] is not None]
    assert len(failed) == 2 and all(r["vehicle"] is None and r["label"] is None for r in failed)


def test_vehicle_rows_of_a_failed_batch_keep_every_input(tmp_path):
    """A batch whose pipeline call raises still gives one flat row per input, with the error."""
    from vehicle_cls.distributed.ray_inference import PipelinePredictor

    predictor = PipelinePredictor.__new__(PipelinePredictor)  # no model: the call below fails for the batch

    class Broken:
        def __call__(self, *a, **kw):
            raise RuntimeError("CUDA out of memory")

    predictor.pipeline, predictor.rows = Broken(), "vehicle"
    table = predictor({"path": ["a.jpg", "b.jpg"], "index": [4, 5]})
    rows = table.to_pylist()
    assert [(r["source"], r["index"], r["vehicle"]) for r in rows] == [("a.jpg", 4, None), ("b.jpg", 5, None)]
    assert all(r["error"] == f"{r['source']}: RuntimeError: CUDA out of memory" for r in rows)


def test_unknown_rows_kind_is_refused(bundle_dir):
    with pytest.raises(ValueError, match="rows must be 'image' .* or 'vehicle' .*, not 'frame'"):
        predict_with_ray(["x.jpg"], bundle_dir, rows="frame")
