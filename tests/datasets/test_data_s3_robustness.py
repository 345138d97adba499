"""Reliability of s3:// datasets (issue #9 items 11, 12): explicit timeouts and retries, so an endpoint
that never answers fails instead of holding a run for minutes, and partial downloads of objects that
left the bucket are removed (real S3 protocol: moto's server on loopback, and a silent socket)."""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from dataset_files import CLASSES, first_photo

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

from vehicle_cls.data import DatasetError  # noqa: E402
from vehicle_cls.data import s3 as s3mod  # noqa: E402

PHOTOS = Path(__file__).parents[1] / "data" / "vehicle_photos"


def test_client_timeouts_and_retries_are_explicit():
    client = s3mod.make_client("http://127.0.0.1:9")
    config = client.meta.config
    assert config.connect_timeout <= 10 and config.read_timeout <= 30  # botocore's defaults: 60 and 60
    assert config.connect_timeout == s3mod.CONNECT_TIMEOUT_S
    assert config.read_timeout == s3mod.READ_TIMEOUT_S
    assert config.retries["total_max_attempts"] == s3mod.MAX_ATTEMPTS <= 3
    # worst case for one request against an endpoint that accepts and then never answers
    assert s3mod.MAX_ATTEMPTS * (s3mod.CONNECT_TIMEOUT_S + s3mod.READ_TIMEOUT_S) <= 90


@pytest.fixture()
def silent_endpoint():
    """A TCP server that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_endpoint_that_never_answers_fails_with_a_clear_error(silent_endpoint, tmp_path, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    client = s3mod.make_client(silent_endpoint, read_timeout=0.5, connect_timeout=0.5, max_attempts=2)
    calls: list[str] = []
    client.meta.events.register("before-send.s3.ListObjectsV2", lambda **kw: calls.append("try"))
    with pytest.raises(DatasetError, match=r"s3://b/p: cannot list objects \(.*(Timeout|timed out)"):
        s3mod.sync_s3_prefix("s3://b/p", tmp_path, endpoint_url=silent_endpoint, client=client)
    assert len(calls) == 2  # max_attempts tries in all, then the error


def test_partials_of_objects_no_longer_listed_are_removed(endpoint, tmp_path, monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="orphans")
    car = (PHOTOS / "car" / "car1.jpg").read_bytes()
    client.put_object(Bucket="orphans", Key="p/car/car1.jpg", Body=car)
    local = s3mod.local_dir_for("s3://orphans/p", tmp_path, endpoint)
    (local / "car").mkdir(parents=True)
    # a kill left a partial of an object deleted since, and one of an object still there
    (local / "car/gone.jpg.part").write_bytes(b"x" * 10)
    (local / "car/gone.jpg.part.json").write_text(json.dumps({"etag": "0" * 32, "size": 99}))
    etag = client.head_object(Bucket="orphans", Key="p/car/car1.jpg")["ETag"].strip('"')
    (local / "car/car1.jpg.part").write_bytes(car[:100])
    (local / "car/car1.jpg.part.json").write_text(json.dumps({"etag": etag, "size": len(car)}))
    _, stats = s3mod.sync_s3_prefix("s3://orphans/p", tmp_path, endpoint_url=endpoint, client=client)
    assert stats.resumed == 1  # the listed object's partial was continued
    assert (local / "car/car1.jpg").read_bytes() == car
    assert sorted(p.name for p in (local / "car").iterdir()) == ["car1.jpg"]


# Issue 17, principles 2 and 7: a remote dataset cannot make training read local files; keys map to files one to one.

def test_remote_csv_and_manifest_rows_stay_inside_the_mirror(s3, endpoint, tmp_path, caplog):
    from vehicle_cls.data import open_dataset

    secret = tmp_path / "local" / "secret.jpg"
    secret.parent.mkdir()
    shutil.copy(first_photo("truck"), secret)
    rel_escape = os.path.relpath(secret, tmp_path / "cache")  # ../local/secret.jpg from the cache root ...
    escape = "../" * 12 + str(secret).lstrip("/")  # ... and far enough up to leave any mirror
    s3.create_bucket(Bucket="remote")
    s3.put_object(Bucket="remote", Key="csv/car/a.jpg", Body=first_photo().read_bytes())
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
    s3.put_object(Bucket="remote", Key="crops/crops/a.jpg", Body=first_photo().read_bytes())
    lines = [{"source": "x/a.jpg", "label": 0, "file": "crops/a.jpg"},
             {"source": "x/b.jpg", "label": 2, "file": str(secret)},
             {"source": "x/c.jpg", "label": 2, "file": escape}]
    s3.put_object(Bucket="remote", Key="crops/manifest.jsonl", Body="".join(json.dumps(x) + "\n" for x in lines).encode())
    ds = open_dataset("s3://remote/crops", cache_dir=tmp_path / "cache", endpoint_url=endpoint)
    assert [Path(s.path).name for s in ds] == ["a.jpg"] and all("secret" not in s.path for s in ds)


def test_s3_key_clashes_are_skipped_by_name_and_the_rest_is_usable(s3, endpoint, tmp_path, caplog):
    from vehicle_cls.data import s3 as s3mod

    s3.create_bucket(Bucket="clash")
    car = first_photo().read_bytes()
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
