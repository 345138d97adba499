"""Reliability of s3:// datasets (issue #9 items 11, 12): explicit timeouts and retries, so an endpoint
that never answers fails instead of holding a run for minutes, and partial downloads of objects that
left the bucket are removed (real S3 protocol: moto's server on loopback, and a silent socket)."""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
from local_servers import moto_s3

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


@pytest.fixture(scope="module")
def endpoint():
    with moto_s3() as url:
        yield url


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
