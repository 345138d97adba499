"""Build README's picture from a `vehicle-cls demo` output: its annotated test predictions in one grid.

Every tile is a held-out test photo as the demo drew it (predicted label and score, top left), so the
picture shows what the shipped demo classifier does, nothing staged. Usage:
    vehicle-cls demo --out demo_output && python tools/make_readme_picture.py demo_output
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

DEST = Path(__file__).resolve().parents[1] / "docs" / "img" / "demo_predictions.jpg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo_output", type=Path, help="the folder `vehicle-cls demo` wrote")
    ap.add_argument("--columns", type=int, default=6)
    ap.add_argument("--tile", type=int, default=200, help="tile side in pixels")
    ap.add_argument("--out", type=Path, default=DEST)
    args = ap.parse_args()
    tiles = sorted((args.demo_output / "predictions").glob("*.png"))
    if not tiles:
        raise SystemExit(f"{args.demo_output / 'predictions'}: no annotated predictions (run `vehicle-cls demo` first)")
    gap, cols = 4, min(args.columns, len(tiles))
    rows = -(-len(tiles) // cols)
    side = args.tile
    grid = Image.new("RGB", (cols * side + (cols + 1) * gap, rows * side + (rows + 1) * gap), "white")
    for i, path in enumerate(tiles):
        tile = Image.open(path).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
        r, c = divmod(i, cols)
        grid.paste(tile, (gap + c * (side + gap), gap + r * (side + gap)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out, quality=85, optimize=True)
    print(f"{len(tiles)} tiles -> {args.out} ({args.out.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
