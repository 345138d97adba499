"""``vehicle-cls predict PATHS... --model DIR``: classify images, folders, globs and videos.

Writes JSON Lines (one ``Result`` per input image or video frame, with every vehicle found in it,
and ``error`` for inputs that failed) to ``--out`` or,
when stdout is not a terminal, to stdout; prints a readable table on a terminal. Exit status 0 when
every input succeeded, 3 (``EXIT_SOME_INPUTS_FAILED``) when some failed (their lines are still
written), 1 when the command could not run, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vehicle_cls.cli.options import add_option_arguments, options_from_args

HELP = "classify the vehicle in images, folders, globs or videos"
DESCRIPTION = """Classify the vehicle in images, folders, glob patterns and video files with a model bundle.

Writes JSON Lines (one object per input image or video frame, listing every vehicle found in it,
with "error" set for inputs that failed) to --out, or to
stdout when stdout is not a terminal; prints a readable table on a terminal.
Exit status: 0 every input succeeded; 3 some inputs failed (their lines are still written);
1 the command could not run (bad bundle, missing weights); 2 bad usage."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``predict`` subcommand."""
    p = subparsers.add_parser(
        "predict", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, glob patterns or video files")
    p.add_argument("--model", metavar="DIR", help="model bundle directory (written by training or Classifier.save)")
    p.add_argument(
        "--out",
        metavar="FILE",
        help="write results here: .jsonl (one JSON object per image or frame), "
        ".csv or .parquet (one flat row per vehicle); default: JSON Lines on stdout when not a terminal",
    )
    p.add_argument(
        "--save-vis",
        metavar="DIR",
        help="save one annotated image per input image (every vehicle "
        "drawn) and one annotated .mp4 per input video into DIR",
    )
    add_option_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit status."""
    from vehicle_cls.cli import EXIT_OK, EXIT_SOME_INPUTS_FAILED, EXIT_USAGE
    from vehicle_cls.io.writers import ResultWriter, output_format

    if not args.model:
        print(
            "vehicle-cls predict: error: --model DIR is required: a model bundle directory "
            "(config.json + model.safetensors, written by `vehicle-cls train` or Classifier.save)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from vehicle_cls.io.images import IMAGE_EXTENSIONS
    from vehicle_cls.io.inputs import VIDEO_EXTENSIONS
    from vehicle_cls.outputs import check_output

    media = tuple(IMAGE_EXTENSIONS) + VIDEO_EXTENSIONS  # what a folder input reads
    if args.out:  # an output never destroys an input: checked before anything else about it
        check_output(args.out, args.paths, reads=lambda p: p.suffix.lower() in media)
    try:
        options = options_from_args(args)
        if args.out:
            output_format(args.out)
    except (ValueError, ImportError) as exc:
        print(f"vehicle-cls predict: error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    from tqdm.auto import tqdm

    from vehicle_cls.fileio import ensure_dir
    from vehicle_cls.pipeline import Pipeline

    if args.save_vis:
        check_output(args.save_vis, args.paths, directory=True, what="--save-vis")
        ensure_dir(args.save_vis, "--save-vis folder")

    pipe = Pipeline.load(args.model, options)
    tty = sys.stdout.isatty()
    out: ResultWriter | None = None
    if args.out:
        out = ResultWriter(args.out)
    elif not tty:
        out = ResultWriter(stream=sys.stdout)
    vis = _Visualizer(Path(args.save_vis), options.frame_stride) if args.save_vis else None
    progress = not args.no_progress and sys.stderr.isatty()
    total = failed = vehicles = 0
    try:
        if tty:
            print(_table_header())
        for result in pipe.stream(args.paths, keep_images=vis is not None, progress=progress):
            total += 1
            failed += not result.ok
            vehicles += len(result)
            if out is not None:
                out.write(result)
            if tty:  # tqdm.write keeps the progress bar (on stderr) below the table
                tqdm.write(_table_row(result), file=sys.stdout)
            if vis is not None:
                vis.add(result)
    finally:
        if vis is not None:
            vis.close()
        if out is not None:
            out.close()
    print(
        f"{total} inputs, {failed} failed, {vehicles} vehicles" + (f"; results in {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    return EXIT_SOME_INPUTS_FAILED if failed else EXIT_OK


def _table_header() -> str:
    return f"{'source':40}  {'label':32}  {'score':>6}  vehicles / box / error"


def _table_row(result: Any) -> str:
    source = result.source if len(result.source) <= 40 else "..." + result.source[-37:]
    if result.frame is not None:
        source = f"{source}#{result.frame}"
    if not result.ok:
        return f"{source:40}  {'ERROR':32}  {'':>6}  {result.error}"
    best = result.best
    if best is None:
        return f"{source:40}  {'(no vehicle)':32}  {'':>6}"
    label = best.label if best.label is not None else "?"
    score = "" if best.score is None else f"{best.score:.3f}"
    where = "whole image" if best.box is None else "[" + ", ".join(f"{v:.0f}" for v in best.box) + "]"
    if best.fallback:
        where += " (fallback)"
    if len(result) > 1:
        where = f"{len(result)} vehicles; best {where}"
    return f"{source:40}  {label[:32]:32}  {score:>6}  {where}"


class _Visualizer:
    """``--save-vis``: one annotated image per input image (<stem>.jpg, never overwritten within a
    run) and one annotated video per input video (<stem>.mp4, at the source rate / frame stride)."""

    def __init__(self, directory: Any, frame_stride: int):
        self.directory = directory
        self.frame_stride = frame_stride
        self.used: set[str] = set()
        self.video: Any = None
        self.video_source: str | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, result: Any) -> None:
        if result.frame is None:
            self._finish_video()
            if result.ok:  # a failed input has no pixels to draw on
                self._save(result.plot(), self._name(result.source), ".jpg")
            return
        if result.source != self.video_source:
            self._finish_video()
            from vehicle_cls.io.video import VideoWriter, video_fps

            self.video_source = result.source
            fps = video_fps(result.source) / self.frame_stride
            self.video = VideoWriter(self.directory / f"{self._name(result.source)}.mp4", fps)
        if result.ok:
            try:
                self.video.write(np.asarray(result.plot()))
            except Exception as exc:  # never stop the run for a picture
                logging.getLogger(__name__).warning("%s: no annotated video (%s)", result.source, exc)

    def _name(self, source: str) -> str:
        stem = Path(source).stem if source and not source.startswith("<") else "image"
        name, n = stem, 1
        while name in self.used:
            name, n = f"{stem}_{n}", n + 1
        self.used.add(name)
        return name

    def _save(self, image: Any, name: str, suffix: str) -> None:
        try:
            image.save(self.directory / f"{name}{suffix}", quality=90)
        except Exception as exc:  # never stop the run for a picture
            logging.getLogger(__name__).warning("%s: no annotated image (%s)", name, exc)

    def _finish_video(self) -> None:
        if self.video is not None:
            self.video.close()
        self.video, self.video_source = None, None

    def close(self) -> None:
        self._finish_video()
