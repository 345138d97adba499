"""``vehicle-cls recipes [NAME]``: list the training recipes shipped with the package, or print one."""

from __future__ import annotations

import argparse
import sys

from vehicle_cls.cli import EXIT_ERROR, EXIT_OK


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "recipes",
        help="list the shipped training recipes (or print one)",
        description="List the training recipes shipped with the package; `vehicle-cls train --config NAME` "
        "uses one by name. With NAME, print that recipe's YAML (redirect it to a file to edit your own).",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="print this recipe's YAML")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vehicle_cls.recipes import find_recipe, list_recipes

    if args.name is None:
        recipes = list_recipes()
        width = max(map(len, recipes), default=0)
        for name, about in recipes.items():
            print(f"{name:<{width}}  {about}")
        return EXIT_OK
    try:
        path = find_recipe(args.name)
    except FileNotFoundError as exc:
        print(f"vehicle-cls recipes: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    sys.stdout.write(path.read_text(encoding="utf-8"))
    return EXIT_OK
