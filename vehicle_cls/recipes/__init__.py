"""The training recipes shipped inside the package, found by name (``stanford_cars_r50_448``) or path.

A recipe's data paths may start with ``package:`` (``package:assets/demo_vehicle_types``): they are
read relative to the installed ``vehicle_cls`` package, so a shipped recipe works after ``pip install``
from any working directory; every other path is the user's (absolute, a URI, or relative to the
working directory), never to the repository.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

PACKAGE_PREFIX = "package:"


def recipes_dir() -> Path:
    """The folder holding the shipped ``*.yaml`` recipes.

    Returns:
        Its path inside the installed package.
    """
    return Path(str(resources.files("vehicle_cls") / "recipes"))


def list_recipes() -> dict[str, str]:
    """Shipped recipe names -> their first comment line (what the recipe is for).

    Returns:
        The names (sorted) and descriptions ("" where a recipe has no leading comment).
    """
    out = {}
    for path in sorted(recipes_dir().glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[:1]
        out[path.stem] = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
    return out


def find_recipe(name_or_path: str | Path) -> Path:
    """The recipe file to read: an existing file as given, else the shipped recipe of that name.

    Args:
        name_or_path: a path, or a shipped recipe's name (``stanford_cars_r50_448``; ``.yaml`` optional).

    Returns:
        The file. A path that is not a bare name is returned as is (its reader reports what is wrong).

    Raises:
        FileNotFoundError: a bare name that is neither a file nor a shipped recipe (the message lists them).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if path.parent == Path("."):
        shipped = recipes_dir() / f"{name}.yaml"
        if shipped.is_file():
            return shipped
        if path.suffix == "":
            raise FileNotFoundError(
                f"{name_or_path}: no such recipe file, and not a shipped recipe name "
                f"(shipped: {', '.join(list_recipes())}; `vehicle-cls recipes` lists them)"
            )
    return path


def resolve_data_path(value: str | None) -> str | None:
    """``package:REL`` -> the absolute path of REL inside the installed package; anything else unchanged.

    Args:
        value: a recipe's data path (or None).

    Returns:
        The path to read.
    """
    if value is None or not value.startswith(PACKAGE_PREFIX):
        return value
    rel = value[len(PACKAGE_PREFIX) :].lstrip("/")
    return str(Path(str(resources.files("vehicle_cls"))) / rel)
