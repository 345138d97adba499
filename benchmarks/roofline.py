"""How fast the pipeline could possibly be on this machine: its FLOPs per image against the machine's
convolution rate, measured in the same process (used by bench_seed_loop.py).

The peak is the best rate of a few convolutions shaped like the detector's (3x3 256->256 as in the
FPN and RPN head, 1x1 1024->1024 as in res4), in fp32 and in the fast dtype, channels_last. Dividing
the pipeline's FLOPs by it gives the shortest time per image any implementation of the same
arithmetic could reach here, hence the largest speed-up over the seed loop that is possible without
doing less work (a smaller test size, a lighter detector) or moving to another precision.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vehicle_cls.cropper.torch_backend import _no_tf32

#: (batch, in channels, out channels, kernel, side): convolutions shaped like the detector's
PEAK_CONVS = ((1, 256, 256, 3, 100), (1, 1024, 1024, 1, 50))


def conv_peak_gflops(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """Best achieved GFLOP/s over PEAK_CONVS in ``dtype`` on ``device`` (no TF32 on CUDA)."""
    best = 0.0
    for n, cin, cout, k, side in PEAK_CONVS:
        x = torch.randn(n, cin, side, side, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(cout, cin, k, k, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
        flops = 2.0 * n * cout * cin * k * k * side * side
        with torch.inference_mode(), _no_tf32(device):
            F.conv2d(x, w, padding=k // 2)
            sync(device)
            count, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                F.conv2d(x, w, padding=k // 2)
                count += 1
            sync(device)
            best = max(best, count * flops / (time.perf_counter() - t0) / 1e9)
    return best


def detector_gflop(cropper, image: np.ndarray) -> float:
    """GFLOP (multiply-adds x2, convs and matmuls) of one detector forward on ``image``."""
    with FlopCounterMode(display=False) as counter:
        cropper.detect([image], grouping="single")
    return counter.get_total_flops() / 1e9


def roofline(cropper, image: np.ndarray, classifier_gflop: float, seed_seconds_per_image: float,
             fast_dtype: torch.dtype, seconds: float = 1.0) -> dict:
    """The pipeline's GFLOP per image, the machine's fp32 and fast-dtype conv peaks, and the largest
    possible speed-up over the seed loop at each (the seed loop's measured time / the shortest time)."""
    device = cropper.device
    det = detector_gflop(cropper, image)
    total = det + classifier_gflop
    fp32 = max(conv_peak_gflops(device, torch.float32, seconds) for _ in range(2))
    fast = max(conv_peak_gflops(device, fast_dtype, seconds) for _ in range(2))
    name = str(fast_dtype).removeprefix("torch.")
    return {"detector_gflop_per_image": round(det, 1), "classifier_gflop_per_image": round(classifier_gflop, 2),
            "fp32_conv_peak_gflops": round(fp32, 1), f"{name}_conv_peak_gflops": round(fast, 1),
            "shortest_s_per_image_fp32": round(total / fp32, 3), f"shortest_s_per_image_{name}": round(total / fast, 3),
            "max_ratio_to_seed_fp32": round(seed_seconds_per_image * fp32 / total, 2),
            f"max_ratio_to_seed_{name}": round(seed_seconds_per_image * fast / total, 2)}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings on CUDA are asynchronous otherwise)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
