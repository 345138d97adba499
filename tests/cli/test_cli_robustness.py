"""Issue 17, principles 1, 2, 3, 4, 7, 9: outputs never destroy inputs, remote data stays remote, no
silent success, a transient fault is not a permanent verdict, S3 keys map to files one to one, one bad
data row is that row. Each test was seen failing on the code before its fix."""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch

from vehicle_cls.cli import main

PHOTOS = Path(__file__).parents[1] / "data" / "vehicle_photos"
CLASSES = ["car", "minibus", "truck"]
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _photo(name: str = "car") -> Path:
    return min((PHOTOS / name).glob("*.jpg"))


def _class_folders(root: Path, per_class: int = 2) -> Path:
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for p in sorted((PHOTOS / c).glob("*.jpg"))[:per_class]:
            shutil.copy(p, root / c / p.name)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from vehicle_cls.classifier import Classifier, Preprocess

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("model")
    Classifier.create("resnet18", classes=CLASSES, preprocess=Preprocess(32, "squash"), device="cpu").save(directory)
    return directory


# ---- 1. an output never destroys an input -----------------------------------------------------------

def test_predict_out_onto_its_own_input_is_refused_up_front(model_dir, tmp_path, capsys):
    photo = tmp_path / "victim.jpg"
    shutil.copy(_photo(), photo)
    before = photo.read_bytes()
    for out in (photo, tmp_path / "." / "victim.jpg"):
        assert main(["predict", str(photo), "--model", str(model_dir), "--out", str(out), "--no-progress"]) != 0
        err = capsys.readouterr().err
        assert "victim.jpg" in err and "input" in err and err.count("\n") == 1
        assert photo.read_bytes() == before
    # a folder input holding the --out file: the same
    assert main(["predict", str(tmp_path), "--model", str(model_dir), "--out", str(photo)]) != 0
    assert photo.read_bytes() == before


def test_save_vis_into_the_source_folder_is_refused(model_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(_photo(), folder / "a.jpg")
    (folder / "clip.mp4").write_bytes(b"not really a video")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    for argv in ([str(folder)], [str(folder / "a.jpg"), str(folder / "clip.mp4")]):
        assert main(["predict", *argv, "--model", str(model_dir), "--save-vis", str(folder), "--no-progress"]) != 0
        err = capsys.readouterr().err
        assert str(folder) in err and "--save-vis" in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_eval_and_crop_out_into_the_data_folder_are_refused(model_dir, tmp_path, capsys):
    data = _class_folders(tmp_path / "d", 1)
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert main(["crop", str(data), "--out", str(data / "crops"), "--mode", "gt", "--no-progress"]) != 0
    assert "input folder" in capsys.readouterr().err
    assert main(["eval", "--model", str(model_dir), "--data", str(data), "--out", str(data), "--workers", "0"]) != 0
    assert "input folder" in capsys.readouterr().err
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_export_out_into_the_bundle_is_refused(model_dir, tmp_path, capsys):
    bundle = shutil.copytree(model_dir, tmp_path / "bundle")
    weights = bundle / "model.safetensors"
    before = weights.read_bytes()
    assert main(["export", "--model", str(bundle), "--out", str(weights)]) != 0
    assert "model.safetensors" in capsys.readouterr().err
    assert weights.read_bytes() == before


def test_output_helper_names_both_paths(tmp_path):
    from vehicle_cls.outputs import OutputError, check_output

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(b"x")
    check_output(tmp_path / "out.jsonl", [tmp_path / "in"])  # beside the inputs: fine
    check_output(tmp_path / "in" / "new.jsonl", [tmp_path / "in"])  # a new file in an input folder: fine
    with pytest.raises(OutputError, match=r"x\.jpg.*is an input"):
        check_output(tmp_path / "in" / "x.jpg", [tmp_path / "in"])
    with pytest.raises(OutputError, match=r"in.*holds the input"):
        check_output(tmp_path / "in", [tmp_path / "in" / "x.jpg"], directory=True)


# ---- 9 (outputs). clear one-line errors naming the path -----------------------------------------------

def test_out_and_save_vis_at_a_file_or_a_full_disk_are_one_line(model_dir, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    photo = _photo()
    for extra in (["--out", str(blocker / "x.jsonl")], ["--save-vis", str(blocker)], ["--out", str(tmp_path)]):
        assert main(["predict", str(photo), "--model", str(model_dir), "--no-progress", *extra]) != 0
        err = capsys.readouterr().err
        assert "Errno" not in err and str(blocker if "--save-vis" in extra or "x.jsonl" in extra[1] else tmp_path) in err
    if Path("/dev/full").exists():
        assert main(["predict", str(photo), "--model", str(model_dir), "--out", "/dev/full", "--no-progress"]) != 0
        err = capsys.readouterr().err
        assert "/dev/full" in err and "Errno" not in err and "no space" in err.lower()


def test_crop_out_at_a_file_is_one_line(tmp_path):
    from vehicle_cls.data import CropCache, open_dataset

    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    with pytest.raises(ValueError, match="crop cache folder .*blocker is a file") as info:
        CropCache(blocker).build(open_dataset(_class_folders(tmp_path / "d", 1), "folders"), mode="gt")
    assert "Errno" not in str(info.value)


# ---- 2. a remote dataset cannot make training read local files ------------------------------------------

@pytest.fixture(scope="module")
def endpoint():
    pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    from local_servers import moto_s3

    with moto_s3() as url:
        yield url


@pytest.fixture()
def s3(endpoint, monkeypatch):
    import boto3

    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    return boto3.client("s3", endpoint_url=endpoint)


def test_remote_csv_and_manifest_rows_stay_inside_the_mirror(s3, endpoint, tmp_path, caplog):
    from vehicle_cls.data import open_dataset

    secret = tmp_path / "local" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copy(_photo("truck"), secret)
    rel_escape = os.path.relpath(secret, tmp_path / "cache")  # ../local/secret.jpg from the cache root ...
    escape = "../" * 12 + str(secret).lstrip("/")  # ... and far enough up to leave any mirror
    s3.create_bucket(Bucket="remote")
    s3.put_object(Bucket="remote", Key="csv/car/a.jpg", Body=_photo().read_bytes())
    s3.put_object(Bucket="remote", Key="csv/labels.csv",
                  Body=f"path,label\ncar/a.jpg,car\n{secret},truck\n{escape},truck\n{rel_escape},truck\n".encode())
    with caplog.at_level(logging.WARNING):
        ds = open_dataset("s3://remote/csv", "csv", cache_dir=tmp_path / "cache", endpoint_url=endpoint)
    assert [Path(s.path).name for s in ds] == ["a.jpg"]
    assert all("secret" not in s.path for s in ds)
    assert str(secret) in caplog.text and "outside" in caplog.text
    # a local CSV may name absolute paths: that is the user's own file
    local_csv = tmp_path / "local" / "labels.csv"
    local_csv.write_text(f"path,label\n{secret},truck\n")
    assert [s.path for s in open_dataset(local_csv, "csv")] == [str(secret)]

    # a crop-cache manifest mirrored from S3 naming a local file
    s3.put_object(Bucket="remote", Key="crops/cache.json",
                  Body=json.dumps({"version": 1, "mode": "gt", "classes": CLASSES}).encode())
    s3.put_object(Bucket="remote", Key="crops/crops/a.jpg", Body=_photo().read_bytes())
    lines = [{"source": "x/a.jpg", "label": 0, "file": "crops/a.jpg"},
             {"source": "x/b.jpg", "label": 2, "file": str(secret)},
             {"source": "x/c.jpg", "label": 2, "file": escape}]
    s3.put_object(Bucket="remote", Key="crops/manifest.jsonl", Body="".join(json.dumps(x) + "\n" for x in lines).encode())
    ds = open_dataset("s3://remote/crops", cache_dir=tmp_path / "cache", endpoint_url=endpoint)
    assert [Path(s.path).name for s in ds] == ["a.jpg"] and all("secret" not in s.path for s in ds)


# ---- 7. S3 keys map to local files one to one -------------------------------------------------------------

def test_s3_key_clashes_are_skipped_by_name_and_the_rest_is_usable(s3, endpoint, tmp_path, caplog):
    from vehicle_cls.data import s3 as s3mod

    s3.create_bucket(Bucket="clash")
    car = _photo().read_bytes()
    long_name = "car/" + "x" * 296 + ".jpg"
    keys = {"ds/car": b"a file where a folder is", "ds/car/a.jpg": car, "ds/car//b.jpg": b"double slash",
            "ds/car/b.jpg": car, "ds/car/c.jpg": car, "ds/car/c.jpg.part": b"an object named like a partial",
            f"ds/{long_name}": car, "ds/car/d.jpg": car}
    for key, body in keys.items():
        s3.put_object(Bucket="clash", Key=key, Body=body)
    for _ in range(2):  # the rerun behaves the same
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            local, stats = s3mod.sync_s3_prefix("s3://clash/ds", tmp_path, endpoint_url=endpoint)
        assert not stats.failed
        for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
            assert (local / "car" / name).read_bytes() == car, name
        for key in ("ds/car", "ds/car//b.jpg", "ds/car/c.jpg.part", "x" * 296):
            assert key in caplog.text, key
        assert not (local / "car" / "c.jpg.part").exists() or (local / "car" / "c.jpg.part").read_bytes() != car


# ---- 3. no silent success ---------------------------------------------------------------------------------

def test_training_on_unreadable_images_fails_without_a_best_bundle(tmp_path):
    data = tmp_path / "garbage"
    for c in CLASSES:
        (data / c).mkdir(parents=True)
        for i in range(4):
            (data / c / f"{i}.jpg").write_bytes(b"not a jpeg at all " * 10)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
data: {{train: {data}, layout: folders, val_fraction: 0.25, num_workers: 0}}
model: {{arch: resnet18, input_size: 32}}
optim: {{name: sgd, lr: 0.01, warmup_epochs: 0}}
run: {{epochs: 1, batch_size: 4, precision: fp32, tensorboard: false, threads: 1, out_dir: {tmp_path / 'run'}}}
""")
    assert main(["train", "--config", str(recipe), "--no-progress"]) != 0
    assert not (tmp_path / "run" / "best").exists()


def test_eval_that_scored_nothing_fails(model_dir, tmp_path, capsys):
    data = tmp_path / "d"
    for c in CLASSES:
        (data / "test" / c).mkdir(parents=True)
        (data / "test" / c / "x.jpg").write_bytes(b"garbage")
    rc = main(["eval", "--model", str(model_dir), "--data", str(data), "--split", "test", "--layout", "folders",
               "--workers", "0", "--device", "cpu", "--out", str(tmp_path / "rep")])
    assert rc != 0 and "no image" in capsys.readouterr().err.lower()


def test_eval_split_that_the_folder_does_not_have_is_refused(model_dir, tmp_path, capsys):
    data = _class_folders(tmp_path / "plain", 1)
    rc = main(["eval", "--model", str(model_dir), "--data", str(data), "--split", "test", "--workers", "0",
               "--device", "cpu", "--out", str(tmp_path / "rep")])
    assert rc != 0 and "test" in capsys.readouterr().err
    assert not (tmp_path / "rep" / "report.json").exists()
    # no --split: the whole folder, labelled as such
    assert main(["eval", "--model", str(model_dir), "--data", str(data), "--workers", "0", "--device", "cpu",
                 "--out", str(tmp_path / "rep")]) == 0
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["split"] == "all"


def test_unreadable_files_in_a_predict_folder_are_not_lost(model_dir, tmp_path, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(_photo(), folder / "good.jpg")
    os.symlink(tmp_path / "gone.jpg", folder / "dangling.jpg")
    out = tmp_path / "p.jsonl"
    with caplog.at_level(logging.WARNING):
        main(["predict", str(folder), "--model", str(model_dir), "--out", str(out), "--no-progress"])
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert any("dangling.jpg" in r["source"] and r.get("error") for r in rows) or "dangling.jpg" in caplog.text


def test_download_does_not_return_a_garbage_file_and_list_agrees(tmp_path, capsys):
    from vehicle_cls import weights

    name = "faster_rcnn_R_101_FPN_3x"
    garbage = weights.cached_path(name, tmp_path)
    garbage.write_bytes(b"<html>login page</html>")
    rc = main(["download", name, "--cache-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert rc != 0 and str(garbage) not in captured.out
    assert main(["download", "--list", "--cache-dir", str(tmp_path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(name + "\t"))
    assert "\tcached\t" not in line and "invalid" in line


# ---- 4. a transient fault is not a permanent verdict -------------------------------------------------------

def test_disk_full_during_crop_stops_and_the_rerun_completes(tmp_path, monkeypatch, caplog):
    from vehicle_cls.data import CropCache, open_dataset

    data = _class_folders(tmp_path / "d", 4)
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


# ---- 9. data files: one bad row is that row ----------------------------------------------------------------

def test_csv_bad_rows_are_those_rows(tmp_path, caplog):
    from vehicle_cls.data import CsvImages

    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(3):
        shutil.copy(_photo(), folder / f"{i}.jpg")
    (folder / "l.csv").write_text("path,label\n0.jpg,car\n" + "x" * 140_000 + ",car\n1.jpg,truck\n0.jpg,car\n"
                                  "2.jpg,car\n")
    with caplog.at_level(logging.WARNING):
        ds = CsvImages(folder / "l.csv", folder)
    assert sorted(Path(s.path).name for s in ds) == ["0.jpg", "1.jpg", "2.jpg"]
    assert f"{folder / 'l.csv'}: row 3" in caplog.text  # the long field
    assert "duplicate" in caplog.text and "row 5" in caplog.text


def test_kaggle_annotation_row_over_the_csv_limit_is_that_row(tmp_path):
    from dataset_files import make_kaggle

    from vehicle_cls.data import KaggleCars

    make_kaggle(tmp_path)
    (tmp_path / "anno_train.csv").write_text("car1.jpg,10,20,90,80,1\n" + "y" * 140_000 + ",1,2,3,4,1\n"
                                             "truck1.jpg,1,2,99,98,2\n")
    ds = KaggleCars(tmp_path, "train")
    assert {Path(s.path).name: s.box for s in ds}["truck1.jpg"] == (1.0, 2.0, 99.0, 98.0)
    assert [p.row for p in ds.problems] == [2] and "field limit" in ds.problems[0].reason


def test_devkit_row_with_class_inf_is_that_row(tmp_path):
    from dataset_files import make_devkit, row

    from vehicle_cls.data import StanfordCars

    devkit = make_devkit(tmp_path, [row(0), row(1, **{"class": float("inf")}), row(2)])
    ds = StanfordCars(devkit, tmp_path / "cars_train")
    assert len(ds) == 2 and len(ds.problems) == 1 and ds.problems[0].row == 2


def test_manifest_bad_lines_and_garbage_cache_json(tmp_path, caplog):
    from vehicle_cls.data import CropCache, DatasetError

    root = tmp_path / "c"
    (root / "crops").mkdir(parents=True)
    shutil.copy(_photo(), root / "crops" / "a.jpg")
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
