"""``vehicle-cls download NAME``: fetch known weights into the cache (or list them)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``download`` subcommand."""
    p = subparsers.add_parser(
        "download",
        help="download known weights (e.g. faster_rcnn_R_101_FPN_3x) into the cache",
        description="Download known weights into the cache ($VEHICLE_CLS_HOME or the user cache dir), "
        "verify them and print their path. Without a network, says which URL to fetch and where to put it.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="registry name or URL (see --list)")
    p.add_argument("--list", action="store_true", help="list the known weights and whether they are cached")
    p.add_argument("--cache-dir", default=None, help="cache directory (default: $VEHICLE_CLS_HOME or user cache)")
    p.add_argument("--sha256", default=None, help="expected sha256 of a URL download")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Download each name; print its path (or the list of known weights)."""
    from vehicle_cls.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE
    from vehicle_cls.weights import (
        KNOWN_WEIGHTS,
        WeightsError,
        cached_path,
        fetch_weights,
        find_cached,
    )

    if args.list or not args.names:
        for name, info in KNOWN_WEIGHTS.items():  # the same verification as `download NAME`: they agree
            found, invalid = find_cached(name, args.cache_dir)
            state = "cached" if found is not None else ("invalid: " + invalid if invalid else "not cached")
            path = found or cached_path(name, args.cache_dir)
            print(f"{name}\t{state}\t{path}\t{info.url}\t{info.licence}")
        return EXIT_OK if args.list else EXIT_USAGE
    status = EXIT_OK
    for name in args.names:
        try:
            print(fetch_weights(name, cache_dir=args.cache_dir, sha256=args.sha256))
        except WeightsError as exc:
            print(f"vehicle-cls download: error: {exc}", file=sys.stderr)
            status = EXIT_ERROR
    return status
