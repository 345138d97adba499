"""Rebuild vehicle_cls/assets/demo_vehicle_types/ from the full CC BY 4.0 vehicle-type set.

All 4,800 photos (800 per class), same names and size (100x100), re-encoded as JPEG at one quality
so the package's demo data stays under 15 MB (the originals are 29 MB). Usage:
    python tools/make_demo_assets.py ../shared/data/vehicle_types [--quality 78]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

DEST = Path(__file__).resolve().parents[1] / "vehicle_cls" / "assets" / "demo_vehicle_types"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="the full set: one folder per class")
    ap.add_argument("--quality", type=int, default=78)
    args = ap.parse_args()
    total = count = 0
    for src in sorted(args.source.glob("*/*.jpg")):
        out = DEST / src.parent.name / src.name
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(src).convert("RGB").save(out, "JPEG", quality=args.quality, optimize=True)
        total += out.stat().st_size
        count += 1
    print(f"{count} photos, {total / 2**20:.1f} MiB in {DEST}")


if __name__ == "__main__":
    main()
