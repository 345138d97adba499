"""s3:// datasets against a real S3 server on loopback (moto's server mode), not a mocked client."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from vehicle_cls.data import DatasetError, open_dataset  # noqa: E402
from vehicle_cls.data.s3 import local_dir_for, parse_s3_uri, sync_s3_prefix  # noqa: E402

PHOTOS = Path(__file__).parents[1] / "data" / "vehicle_photos"


def upload_class_folders(client, bucket: str, prefix: str) -> dict[str, bytes]:
    client.create_bucket(Bucket=bucket)
    uploaded = {}
    for p in sorted(PHOTOS.glob("*/*.jpg")):
        key = f"{prefix}/{p.parent.name}/{p.name}"
        client.put_object(Bucket=bucket, Key=key, Body=p.read_bytes())
        uploaded[key] = p.read_bytes()
    client.put_object(Bucket=bucket, Key=f"{prefix}/", Body=b"")  # a console-made folder marker
    client.put_object(Bucket=bucket, Key=f"{prefix}2/other.jpg", Body=b"not in this prefix")
    return uploaded


def _count_gets(client) -> list[str]:
    calls: list[str] = []
    client.meta.events.register("provide-client-params.s3.GetObject", lambda params, **kw: calls.append(params["Key"]))
    return calls


def test_parse_uri():
    assert parse_s3_uri("s3://bucket/a/b") == ("bucket", "a/b")
    assert parse_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError):
        parse_s3_uri("http://bucket/a")


def test_open_dataset_downloads_once_into_the_cache(s3, endpoint, tmp_path):
    uploaded = upload_class_folders(s3, "cars", "photos")
    cache = tmp_path / "cache"
    ds = open_dataset("s3://cars/photos", cache_dir=cache, endpoint_url=endpoint)
    assert ds.classes == ["car", "minibus", "truck"] and len(ds) == 12
    local = local_dir_for("s3://cars/photos", cache, endpoint)
    assert all(Path(s.path).is_relative_to(local) for s in ds)
    for s in ds:  # byte-identical copies of what was uploaded
        key = "photos/" + Path(s.path).relative_to(local).as_posix()
        assert Path(s.path).read_bytes() == uploaded[key]
    assert not (local.parent / "photos2").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in local.rglob("*.jpg")}

    # second open: nothing downloaded (no GetObject request, files untouched)
    client = boto3.client("s3", endpoint_url=endpoint)
    gets = _count_gets(client)
    _, stats = sync_s3_prefix("s3://cars/photos", cache, endpoint_url=endpoint, client=client)
    assert gets == [] and stats.downloaded == 0 and stats.skipped == 12 and stats.listed == 12
    ds2 = open_dataset("s3://cars/photos", cache_dir=cache, endpoint_url=endpoint)
    assert [s.path for s in ds2] == [s.path for s in ds]
    assert {p: p.stat().st_mtime_ns for p in local.rglob("*.jpg")} == mtimes

    # a changed object is fetched again, and only that one
    s3.put_object(Bucket="cars", Key="photos/car/car1.jpg", Body=(PHOTOS / "truck/truck4.jpg").read_bytes())
    gets.clear()
    _, stats = sync_s3_prefix("s3://cars/photos", cache, endpoint_url=endpoint, client=client)
    assert gets == ["photos/car/car1.jpg"] and stats.downloaded == 1 and stats.skipped == 11
    assert (local / "car/car1.jpg").read_bytes() == (PHOTOS / "truck/truck4.jpg").read_bytes()


def test_endpoint_from_environment(s3, endpoint, tmp_path, monkeypatch):
    upload_class_folders(s3, "envbucket", "data")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    ds = open_dataset("s3://envbucket/data", cache_dir=tmp_path)
    assert len(ds) == 12


def test_interrupted_download_is_resumed_or_redone(s3, endpoint, tmp_path):
    upload_class_folders(s3, "resume", "p")
    cache = tmp_path / "cache"
    local = local_dir_for("s3://resume/p", cache, endpoint)
    head = s3.head_object(Bucket="resume", Key="p/car/car1.jpg")
    etag = head["ETag"].strip('"')
    data = (PHOTOS / "car/car1.jpg").read_bytes()
    # a crash left car1.jpg half downloaded, and truck1.jpg as a partial of an older object version
    (local / "car").mkdir(parents=True)
    (local / "car/car1.jpg.part").write_bytes(data[:1000])
    (local / "car/car1.jpg.part.json").write_text(json.dumps({"etag": etag, "size": len(data)}))
    (local / "truck").mkdir(parents=True)
    (local / "truck/truck1.jpg.part").write_bytes(b"x" * 500)
    (local / "truck/truck1.jpg.part.json").write_text(json.dumps({"etag": "0" * 32, "size": 4000}))
    # and minibus1.jpg complete but from an earlier run whose state file was lost: checked by MD5
    (local / "minibus").mkdir(parents=True)
    shutil.copy(PHOTOS / "minibus/minibus1.jpg", local / "minibus/minibus1.jpg")

    client = boto3.client("s3", endpoint_url=endpoint)
    gets = _count_gets(client)
    _, stats = sync_s3_prefix("s3://resume/p", cache, endpoint_url=endpoint, client=client)
    assert stats.resumed == 1 and stats.downloaded == 10 and stats.skipped == 1
    assert "p/minibus/minibus1.jpg" not in gets
    for p in PHOTOS.glob("*/*.jpg"):
        target = local / p.parent.name / p.name
        assert hashlib.md5(target.read_bytes()).hexdigest() == hashlib.md5(p.read_bytes()).hexdigest(), target
    total = sum(p.stat().st_size for p in PHOTOS.glob("*/*.jpg"))
    assert stats.bytes_downloaded == total - 1000 - (local / "minibus/minibus1.jpg").stat().st_size
    assert not list(local.rglob("*.part")) and not list(local.rglob("*.part.json"))


def test_missing_prefix_and_bucket_are_clear_errors(s3, endpoint, tmp_path):
    s3.create_bucket(Bucket="emptyb")
    with pytest.raises(DatasetError, match=r"s3://emptyb/nothing: no objects"):
        open_dataset("s3://emptyb/nothing", cache_dir=tmp_path, endpoint_url=endpoint)
    with pytest.raises(DatasetError, match=r"s3://no-such-bucket/x: cannot list objects"):
        open_dataset("s3://no-such-bucket/x", cache_dir=tmp_path, endpoint_url=endpoint)


def test_boto3_missing_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "boto3" or name.startswith("botocore"):
            raise ImportError("No module named 'boto3'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    from vehicle_cls.data.s3 import make_client

    with pytest.raises(ImportError, match=r"vehicle-cls\[s3\]"):
        make_client()


def test_concurrent_syncs_download_each_object_once(s3, endpoint, tmp_path):
    """Two DDP ranks opening the same URI at once: one downloads, the other waits and skips."""
    from concurrent.futures import ThreadPoolExecutor

    upload_class_folders(s3, "ranks", "d")
    clients = [boto3.client("s3", endpoint_url=endpoint) for _ in range(2)]
    gets = [_count_gets(c) for c in clients]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: sync_s3_prefix("s3://ranks/d", tmp_path, endpoint_url=endpoint, client=c)[1],
                                clients))
    assert sorted(r.downloaded for r in results) == [0, 12]
    assert sorted(r.skipped for r in results) == [0, 12]
    assert len(gets[0]) + len(gets[1]) == 12
    local = local_dir_for("s3://ranks/d", tmp_path, endpoint)
    for p in PHOTOS.glob("*/*.jpg"):
        assert (local / p.parent.name / p.name).read_bytes() == p.read_bytes()


def test_default_cache_is_under_vehicle_cls_home(monkeypatch, tmp_path):
    monkeypatch.setenv("VEHICLE_CLS_HOME", str(tmp_path))
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert local_dir_for("s3://b/some/prefix/") == tmp_path / "datasets" / "s3" / "aws" / "b" / "some" / "prefix"
    assert local_dir_for("s3://b/p", endpoint_url="http://127.0.0.1:9000") == tmp_path / "datasets/s3/127.0.0.1_9000/b/p"
    with pytest.raises(ValueError, match="unsafe"):
        local_dir_for("s3://b/../../etc")
