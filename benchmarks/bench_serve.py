"""Load test of ``vehicle-cls serve``: requests/s and latency percentiles with and without batching.

    python benchmarks/bench_serve.py                          # resnet18 @ 112 px, 64 clients, 256 requests
    python benchmarks/bench_serve.py --model runs/x/best --device cuda --clients 128 --requests 2048

Starts the real app (uvicorn) on a free 127.0.0.1 port in this process, once per setting, and
sends ``--requests`` single-image multipart POSTs from ``--clients`` concurrent asyncio clients
(httpx), cycling through the real JPEGs in tests/data. Settings: the batcher with
``--max-batch-size``/``--max-wait-ms``, and ``max_batch_size=1`` (one model call per request) as
the baseline measured in the same process. Reports requests/s, p50/p99 latency, model calls and
the mean batch size, and the throughput ratio to the baseline. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402

from vehicle_cls.classifier import Classifier, Preprocess  # noqa: E402
from vehicle_cls.options import InferenceOptions
from vehicle_cls.pipeline import Pipeline  # noqa: E402
from vehicle_cls.serve.app import ServeConfig, create_app  # noqa: E402


def serve_in_thread(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


async def load(url: str, photos: list[tuple[str, bytes]], requests: int, clients: int) -> list[float]:
    latencies: list[float] = []
    todo = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        for i in todo:
            name, data = photos[i % len(photos)]
            t0 = time.perf_counter()
            resp = await http.post(url + "/predict", files=[("f", (name, data, "image/jpeg"))])
            latencies.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                raise RuntimeError(f"{resp.status_code}: {resp.text[:200]}")

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies


def run_setting(pipe: Pipeline, photos, args, max_batch: int, max_wait: float) -> dict:
    app = create_app(pipe, ServeConfig(InferenceOptions(batch_size=max_batch, topk=5), max_wait_ms=max_wait))
    server, thread, url = serve_in_thread(app)
    try:
        asyncio.run(load(url, photos, min(args.clients, 16), min(args.clients, 16)))  # warm-up
        before = httpx.get(url + "/metrics").json()
        t0 = time.perf_counter()
        lat = asyncio.run(load(url, photos, args.requests, args.clients))
        wall = time.perf_counter() - t0
        after = httpx.get(url + "/metrics").json()
    finally:
        server.should_exit = True
        thread.join(60)
    lat.sort()
    calls = after["model_calls"] - before["model_calls"]
    images = after["images"] - before["images"]
    return {"max_batch_size": max_batch, "max_wait_ms": max_wait, "requests": len(lat),
            "requests_per_s": round(len(lat) / wall, 2),
            "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
            "model_calls": calls, "mean_batch": round(images / max(calls, 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="bundle directory (default: an untrained --arch at --size)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            torch.manual_seed(0)
            model = Classifier.create(args.arch, classes=[f"c{i}" for i in range(6)], weights=None,
                                      preprocess=Preprocess(input_size=args.size)).save(Path(tmp) / "bundle")
        pipe = Pipeline.load(model, device=args.device)
        files = sorted((ROOT / "tests" / "data" / "photos").glob("*.jpg")) + \
            sorted((ROOT / "tests" / "data" / "predict").glob("*.jpg"))
        photos = [(p.name, p.read_bytes()) for p in files]
        rows = [run_setting(pipe, photos, args, 1, 0.0),
                run_setting(pipe, photos, args, args.max_batch_size, args.max_wait_ms)]
    base = rows[0]["requests_per_s"]
    for row in rows:
        row["throughput_vs_unbatched"] = round(row["requests_per_s"] / base, 2)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
