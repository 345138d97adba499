"""Peak memory of decoding one large JPEG whole vs reduced (``load_image(path, max_side=N)``, Pillow's
JPEG draft mode), each in a fresh process so the peaks do not mix; reports the ratio.

    python benchmarks/bench_decode_memory.py --side 13000 --max-side 1333
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys, time
from vehicle_cls.io.images import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
pixels = load_image(sys.argv[1], max_side=None if sys.argv[2] == "none" else int(sys.argv[2]))
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"shape": list(pixels.shape), "peak_mib": peak / 1024, "import_mib": before / 1024, "seconds": seconds}))
"""


def make_jpeg(path: Path, side: int) -> None:
    """A smooth gradient photo-like JPEG of ``side`` x ``side`` pixels, written in horizontal strips."""
    image = Image.new("RGB", (side, side))
    strip = 512
    xx = np.arange(side, dtype=np.uint32)
    for top in range(0, side, strip):
        yy = np.arange(top, min(side, top + strip), dtype=np.uint32)[:, None]
        block = np.stack(np.broadcast_arrays((xx * 255 // side)[None, :], yy * 255 // side, (xx[None, :] + yy) % 256), -1)
        image.paste(Image.fromarray(block.astype(np.uint8)), (0, top))
    image.save(path, quality=85)


def measure(path: Path, max_side: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(path), max_side], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=13000, help="the test JPEG is side x side pixels")
    parser.add_argument("--max-side", type=int, default=1333, help="what the detector needs (detectron2's max test size)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jpg"
        make_jpeg(path, args.side)
        full = measure(path, "none")
        reduced = measure(path, str(args.max_side))
    print(f"{args.side}x{args.side} JPEG ({path.name}), one process per decode; peak RSS includes the imports "
          f"({full['import_mib']:.0f} MiB)")
    print("| decode | pixels | peak RSS MiB | peak above the imports MiB | seconds |")
    print("|---|---|---|---|---|")
    for name, r in (("whole", full), (f"max_side={args.max_side}", reduced)):
        print(f"| {name} | {r['shape'][1]}x{r['shape'][0]} | {r['peak_mib']:.0f} | "
              f"{r['peak_mib'] - r['import_mib']:.0f} | {r['seconds']:.2f} |")
    print(f"peak RSS ratio reduced/whole: {reduced['peak_mib'] / full['peak_mib']:.3f}; "
          f"time ratio: {reduced['seconds'] / full['seconds']:.3f}")


if __name__ == "__main__":
    main()
