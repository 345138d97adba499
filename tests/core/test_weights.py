"""Weights download: atomic, verified, cached, with a clear offline message (loopback server only)."""
from __future__ import annotations

import argparse
import pickle
import hashlib
import http.server
import socket
import urllib.request
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from local_servers import serve_http

from vehicle_cls import weights
from vehicle_cls.weights import KNOWN_WEIGHTS, WeightsError, cache_dir, fetch_weights

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()
ZOO_PKL = pickle.dumps({"model": {"w": np.arange(6, dtype=np.float32)}, "__author__": "Detectron2 Model Zoo"}, 2)


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).hits.append(self.path)
        if self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])  # the server dies mid-stream
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.startswith("/zoo/"):
            body = ZOO_PKL if self.path.endswith("good.pkl") else PAYLOAD
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/missing/"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    with serve_http(_Handler) as url:
        yield url


def leftovers(directory: Path) -> list[str]:
    """Every file under ``directory`` (URL downloads live in urls/<hash of the URL>/<name>)."""
    return sorted(p.name for p in directory.rglob("*") if not p.is_dir())


def test_registry_has_the_zoo_urls():
    assert KNOWN_WEIGHTS["faster_rcnn_R_101_FPN_3x"].url == (
        "https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/faster_rcnn_R_101_FPN_3x/137851257/model_final_f6e8b1.pkl"
    )
    assert KNOWN_WEIGHTS["mask_rcnn_R_101_FPN_3x"].url == (
        "https://dl.fbaipublicfiles.com/detectron2/COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x/138205316/"
        "model_final_a3ec72.pkl"
    )
    assert "CC BY-SA 3.0" in KNOWN_WEIGHTS["faster_rcnn_R_101_FPN_3x"].licence
    assert len({w.filename for w in KNOWN_WEIGHTS.values()}) == len(KNOWN_WEIGHTS)


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VEHICLE_CLS_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home"
    monkeypatch.delenv("VEHICLE_CLS_HOME")
    assert cache_dir().name == "vehicle_cls"


def test_download_checksum_ok_then_cached(server, tmp_path):
    _Handler.hits.clear()
    path = fetch_weights(f"{server}/files/w.pkl", cache_dir=tmp_path, sha256=SHA)
    assert path == weights.cached_path(f"{server}/files/w.pkl", tmp_path) and path.name == "w.pkl"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["w.pkl"]  # no temporary file left behind
    assert fetch_weights(f"{server}/files/w.pkl", cache_dir=tmp_path, sha256=SHA) == path
    assert _Handler.hits == ["/files/w.pkl"]  # the second call used the cache


def test_checksum_mismatch_discards_the_file(server, tmp_path):
    with pytest.raises(WeightsError, match=f"checksum mismatch for {server}/files/w.pkl: expected sha256 0+, got {SHA}"):
        fetch_weights(f"{server}/files/w.pkl", cache_dir=tmp_path, sha256="0" * 64)
    assert leftovers(tmp_path) == []


def test_registry_sha256_prefix_is_checked(server, tmp_path, monkeypatch):
    good = weights.WeightsInfo(url=f"{server}/files/r.pth", filename="r.pth", sha256_prefix=SHA[:8])
    bad = weights.WeightsInfo(url=f"{server}/files/b.pth", filename="b.pth", sha256_prefix="deadbeef")
    monkeypatch.setitem(KNOWN_WEIGHTS, "good", good)
    monkeypatch.setitem(KNOWN_WEIGHTS, "bad", bad)
    assert fetch_weights("good", cache_dir=tmp_path).read_bytes() == PAYLOAD
    with pytest.raises(WeightsError, match="starting deadbeef"):
        fetch_weights("bad", cache_dir=tmp_path)
    assert leftovers(tmp_path) == ["r.pth"]


def test_truncated_download_is_never_cached(server, tmp_path):
    with pytest.raises(WeightsError, match=f"could not download {server}/truncated/w.pkl"):
        fetch_weights(f"{server}/truncated/w.pkl", cache_dir=tmp_path)
    assert leftovers(tmp_path) == []


def test_crash_mid_stream_leaves_no_cached_file(server, tmp_path, monkeypatch):
    """A process killed mid-download (simulated by an interrupt) leaves nothing that counts as cached."""
    real = urllib.request.urlopen

    class Dying:
        def __init__(self, response):
            self.response, self.headers, self.calls = response, response.headers, 0

        def read(self, n):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return self.response.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.response.close()

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Dying(real(*a, **k)))
    monkeypatch.setattr(weights, "_CHUNK", 1024)
    with pytest.raises(KeyboardInterrupt):
        fetch_weights(f"{server}/files/w.pkl", cache_dir=tmp_path)
    dest = weights.cached_path(f"{server}/files/w.pkl", tmp_path)
    assert not dest.exists()
    # a stale partial file from a hard crash (kill -9) is not mistaken for the weights either
    (dest.parent / ".w.pkl.abc123.part").write_bytes(PAYLOAD[:100])
    monkeypatch.setattr(urllib.request, "urlopen", real)
    path = fetch_weights(f"{server}/files/w.pkl", cache_dir=tmp_path, sha256=SHA)
    assert path.read_bytes() == PAYLOAD


def test_offline_message_names_url_and_destination(tmp_path):
    with socket.socket() as s:  # a loopback port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/detectron2/model_final_f6e8b1.pkl"
    with pytest.raises(WeightsError) as info:
        fetch_weights(url, cache_dir=tmp_path)
    message = str(info.value)
    assert url in message and str(weights.cached_path(url, tmp_path)) in message and "\n" not in message
    assert leftovers(tmp_path) == []


def test_offline_zoo_name_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("no network"))
    )
    with pytest.raises(WeightsError) as info:
        fetch_weights("faster_rcnn_R_101_FPN_3x", cache_dir=tmp_path)
    message = str(info.value)
    assert KNOWN_WEIGHTS["faster_rcnn_R_101_FPN_3x"].url in message
    assert str(tmp_path / KNOWN_WEIGHTS["faster_rcnn_R_101_FPN_3x"].filename) in message
    assert "VEHICLE_CLS_HOME" in message


def test_http_error_and_file_urls(server, tmp_path):
    with pytest.raises(WeightsError, match="HTTP Error 404"):
        fetch_weights(f"{server}/missing/x.pkl", cache_dir=tmp_path)
    src = tmp_path / "src" / "local.bin"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    got = fetch_weights(src.as_uri(), cache_dir=tmp_path / "cache", sha256=SHA)
    assert got.read_bytes() == PAYLOAD
    assert fetch_weights(str(src)) == src  # an existing local path is used as is
    # a zoo file fetched by hand and kept under its URL name is found too (verified like a download, issue 17)
    (tmp_path / "model_final_f6e8b1.pkl").write_bytes(ZOO_PKL)
    assert fetch_weights("faster_rcnn_R_101_FPN_3x", cache_dir=tmp_path) == tmp_path / "model_final_f6e8b1.pkl"
    with pytest.raises(WeightsError, match="unknown weights 'nope'"):
        fetch_weights("nope", cache_dir=tmp_path)


def test_download_cli(server, tmp_path, capsys):
    from vehicle_cls.cli import download

    parser = argparse.ArgumentParser()
    download.register(parser.add_subparsers())
    args = parser.parse_args(["download", f"{server}/files/c.pkl", "--cache-dir", str(tmp_path), "--sha256", SHA])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(weights.cached_path(f"{server}/files/c.pkl", tmp_path))
    args = parser.parse_args(["download", "--list", "--cache-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "faster_rcnn_R_101_FPN_3x\tnot cached" in out and "mask_rcnn_R_101_FPN_3x" in out
    args = parser.parse_args(["download", f"{server}/missing/x.pkl", "--cache-dir", str(tmp_path)])
    assert args.func(args) == 1
    assert "could not download" in capsys.readouterr().err


def test_zoo_pickle_without_checksum_is_validated_before_caching(server, tmp_path):
    good = fetch_weights(f"{server}/zoo/good.pkl", cache_dir=tmp_path)
    assert good.read_bytes() == ZOO_PKL
    with pytest.raises(WeightsError, match=r"bad\.pkl is not a detectron2 checkpoint.*file discarded"):
        fetch_weights(f"{server}/zoo/bad.pkl", cache_dir=tmp_path)
    assert leftovers(tmp_path) == ["good.pkl"]  # nothing of the bad download stays, not even a .part


def test_detector_weights_come_from_the_one_config_registry():
    """KNOWN_WEIGHTS, the detector's mask head and the detectron2 config file all read vehicle_cls.zoo."""
    from vehicle_cls.cropper.rcnn import check_config
    from vehicle_cls.zoo import DETECTOR_CONFIGS, detector_config

    assert set(DETECTOR_CONFIGS) <= set(KNOWN_WEIGHTS)
    for name, c in DETECTOR_CONFIGS.items():
        assert KNOWN_WEIGHTS[name].url == c.weights_url and check_config(name) is c.mask_on
    assert detector_config("mask_rcnn_R_101_FPN_3x").d2_config_file.endswith("mask_rcnn_R_101_FPN_3x.yaml")
    with pytest.raises(ValueError, match="unknown cropper config 'retinanet'"):
        detector_config("retinanet")
