"""The ``vehicle-cls`` command: one subcommand per module in this package.

Each subcommand module defines ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` as the default; modules import heavy libraries only inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

SUBCOMMANDS = ("predict", "crop", "train", "eval", "download", "demo", "serve", "export", "recipes")

EXIT_OK = 0
EXIT_SOME_INPUTS_FAILED = 3  # results were still written for every input
EXIT_USAGE = 2  # argparse's own code for bad arguments
EXIT_ERROR = 1  # the command could not run (missing weights, bad config, ...)


def build_parser() -> argparse.ArgumentParser:
    from vehicle_cls import __version__

    parser = argparse.ArgumentParser(prog="vehicle-cls", description="Find the vehicle in a photo and tell what it is.")
    parser.add_argument("--version", action="version", version=f"vehicle-cls {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"vehicle_cls.cli.{name}")
        module.register(subparsers)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args``, except that ``section.key=value`` overrides may also follow options
    (``train --config r.yaml --no-progress run.epochs=3``): argparse collects a positional list only once."""
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(_is_override(e) for e in extra):
        args.overrides.extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _is_override(word: str) -> bool:
    key, sep, _ = word.partition("=")
    return bool(sep) and not word.startswith("-") and "." in key


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    level = logging.WARNING - 10 * min(args.verbose, 2) if args.verbose else logging.INFO
    # our INFO lines by default; third-party libraries (onnxscript, urllib3, ...) only warn unless -v/-vv
    logging.basicConfig(level=level if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("vehicle_cls").setLevel(level)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line instead of a traceback; -vv shows the traceback
        if args.verbose >= 2:
            raise
        print(f"vehicle-cls {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
