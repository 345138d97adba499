"""Reliability of downloads and weights files (issue #9 items 3, 4, 5): a cut download without a
Content-Length is never cached, two URLs never share a cache entry, and a malicious .pth is refused
in one line (loopback HTTP server only)."""
from __future__ import annotations

import argparse
import http.server
import io
import os
import pickle
from typing import ClassVar

import numpy as np
import pytest
import torch
from local_servers import serve_http
from safetensors.torch import save as safetensors_bytes

from vehicle_cls.cli import main
from vehicle_cls.cropper.checkpoint import CheckpointError, load_state_dict
from vehicle_cls.weights import WeightsError, fetch_weights


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


STATE = {"backbone.w": torch.arange(4096, dtype=torch.float32), "head.b": torch.ones(3)}
BODIES = {
    ".pkl": pickle.dumps({"model": {k: v.numpy() for k, v in STATE.items()}, "__author__": "x"}, protocol=2),
    ".pth": _torch_bytes({"model": STATE}),
    ".safetensors": safetensors_bytes(STATE),
    ".bin": bytes(range(256)) * 64,
}


class _NoLengthHandler(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0 replies without Content-Length: the body ends when the connection closes.

    ``/cut/x.ext`` sends 60 % of the file and closes, which a client cannot tell from the end of it.
    ``/a/...`` and ``/b/...`` serve different bytes under the same file name.
    """

    protocol_version = "HTTP/1.0"
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).hits.append(self.path)
        suffix = os.path.splitext(self.path)[1]
        body = BODIES[suffix]
        if self.path.startswith("/b/"):
            body = BODIES[".bin"][::-1] if suffix == ".bin" else _torch_bytes({"model": {"other": torch.zeros(2)}})
        if self.path.startswith("/cut/"):
            body = body[: int(len(body) * 0.6)]
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    with serve_http(_NoLengthHandler) as url:
        yield url


def _files(root):
    return sorted(p.name for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("suffix", [".pkl", ".pth", ".safetensors", ".bin"])
def test_cut_download_without_content_length_is_never_cached(server, tmp_path, suffix):
    url = f"{server}/cut/model{suffix}"
    with pytest.raises(WeightsError, match="file discarded") as info:
        fetch_weights(url, cache_dir=tmp_path)
    assert url in str(info.value) and "\n" not in str(info.value)
    assert _files(tmp_path) == []  # neither the file nor a .part
    with pytest.raises(WeightsError):  # and the next call does not find a cached partial either
        fetch_weights(url, cache_dir=tmp_path)


@pytest.mark.parametrize("suffix", [".pkl", ".pth", ".safetensors"])
def test_complete_download_without_content_length_is_verified_by_format(server, tmp_path, suffix):
    path = fetch_weights(f"{server}/full/model{suffix}", cache_dir=tmp_path)
    assert path.read_bytes() == BODIES[suffix]


def test_unverifiable_download_needs_a_checksum(server, tmp_path):
    import hashlib

    url = f"{server}/full/model.bin"
    with pytest.raises(WeightsError, match="no Content-Length.*sha256"):
        fetch_weights(url, cache_dir=tmp_path)
    sha = hashlib.sha256(BODIES[".bin"]).hexdigest()
    assert fetch_weights(url, cache_dir=tmp_path, sha256=sha).read_bytes() == BODIES[".bin"]


def test_download_cli_refuses_a_cut_download(server, tmp_path, capsys):
    from vehicle_cls.cli import download

    parser = argparse.ArgumentParser()
    download.register(parser.add_subparsers())
    args = parser.parse_args(["download", f"{server}/cut/model.pth", "--cache-dir", str(tmp_path)])
    assert args.func(args) == 1
    assert "file discarded" in capsys.readouterr().err
    assert _files(tmp_path) == []


def test_two_urls_with_the_same_file_name_do_not_share_a_cache_entry(server, tmp_path):
    a = fetch_weights(f"{server}/a/model.pth", cache_dir=tmp_path)
    b = fetch_weights(f"{server}/b/model.pth", cache_dir=tmp_path)
    assert a != b and a.name == b.name == "model.pth"
    assert a.read_bytes() == BODIES[".pth"]
    assert b.read_bytes() != a.read_bytes()
    assert set(load_state_dict(b)) == {"other"}
    _NoLengthHandler.hits.clear()
    assert fetch_weights(f"{server}/a/model.pth", cache_dir=tmp_path) == a  # each from its own cache entry
    assert fetch_weights(f"{server}/b/model.pth", cache_dir=tmp_path) == b
    assert _NoLengthHandler.hits == []


def test_malicious_pth_is_refused_in_one_line_naming_file_and_global(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"backbone.x": Evil()}}, path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message and ("'posix.system'" in message or "'nt.system'" in message)
    assert "weights_only" not in message  # not torch's advice to turn the protection off
    assert not marker.exists()


def test_corrupt_pth_and_safetensors_are_one_line(tmp_path):
    for suffix in (".pth", ".safetensors", ".pkl"):
        path = tmp_path / f"cut{suffix}"
        path.write_bytes(BODIES[suffix][: len(BODIES[suffix]) // 2])
        with pytest.raises(CheckpointError) as info:
            load_state_dict(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_numpy_rng_state_in_a_pth_is_refused_not_executed(tmp_path):
    path = tmp_path / "np.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "rng": np.random.get_state()}, path)
    with pytest.raises(CheckpointError, match=r"refused to load global 'numpy"):
        load_state_dict(path)


# Issue 17, principle 3: a garbage cached file is never returned, and `download --list` agrees.

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
