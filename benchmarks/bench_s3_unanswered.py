"""How long an s3:// sync takes to fail against an endpoint that accepts connections and never
answers (a hung proxy, a firewall that swallows packets), with the client's default settings.

    python benchmarks/bench_s3_unanswered.py          # needs boto3 (pip install vehicle-cls[s3])
"""
from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vehicle_cls.data import s3


def main() -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "benchmark")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(server.accept()[0]) for _ in iter(int, 1)], daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        try:
            s3.sync_s3_prefix("s3://bucket/prefix", cache, endpoint_url=url)
        except Exception as exc:  # noqa: BLE001 - the error is what is measured
            print(f"{type(exc).__name__}: {str(exc)[:160]}")
    print(f"failed after {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
