"""The API reference (docs/api.md) is generated from the docstrings, so the public entry points must
document exactly their parameters (Args), what they return (Returns / Yields) and what they raise
themselves (Raises), in the Google style that mkdocstrings renders. Parsed statically with griffe (what
mkdocstrings uses), so nothing heavy is imported."""

from __future__ import annotations

import ast
import logging
import textwrap
from pathlib import Path

import griffe
import pytest

import vehicle_cls

ROOT = Path(__file__).resolve().parents[2]

#: Entry points besides ``vehicle_cls.__all__`` (whose classes are walked method by method): a class
#: here is walked the same way, a function is checked alone.
EXTRA = [
    "vehicle_cls.options.InferenceOptions",
    "vehicle_cls.train.evaluate.evaluate",
    "vehicle_cls.train.evaluate.EvalResult",
    "vehicle_cls.train.trainer.Trainer",
    "vehicle_cls.train.trainer.train",
    "vehicle_cls.train.config.load_config",
    "vehicle_cls.train.config.TrainConfig",
    "vehicle_cls.io.writers.output_format",
    "vehicle_cls.io.writers.ResultWriter",
    "vehicle_cls.recipes.recipes_dir",
    "vehicle_cls.recipes.list_recipes",
    "vehicle_cls.recipes.find_recipe",
    "vehicle_cls.recipes.resolve_data_path",
]
#: Dunder methods that are entry points (the others, ``__len__``, ``__repr__``, ..., are protocol).
PUBLIC_DUNDERS = {"__init__", "__call__"}


class _Collect(logging.Handler):
    """The warnings griffe logs while parsing a docstring (an Args entry not in the signature, ...)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def package() -> griffe.Module:
    return griffe.load("vehicle_cls", search_paths=[str(ROOT)], docstring_parser="google")


def _public_paths() -> list[str]:
    """Dotted paths (where each is defined) of ``vehicle_cls.__all__`` and ``EXTRA``."""
    paths = []
    for name in vehicle_cls.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(vehicle_cls, name)
        paths.append(f"{obj.__module__}.{obj.__qualname__}")
    return paths + EXTRA


def _entry_points(package: griffe.Module) -> list[griffe.Object]:
    """Each public function, and each public class with its own public methods (properties are
    attributes, documented by their one line)."""
    out: list[griffe.Object] = []
    for path in _public_paths():
        obj = package[path.removeprefix("vehicle_cls.")]
        out.append(obj)
        if obj.is_class:
            for name, member in obj.members.items():
                if name.startswith("_") and name not in PUBLIC_DUNDERS:
                    continue
                if member.is_function and "property" not in member.labels and member.lineno:
                    out.append(member)  # lineno 0: synthesised (a dataclass's __init__: its fields)
    return out


def _raised_directly(source: str) -> set[str]:
    """Exception classes a ``raise`` in this body names (not in nested functions; a bare ``raise`` or
    ``raise exc`` of a variable names none)."""
    tree = ast.parse(textwrap.dedent(source))
    body = tree.body[0]
    names: set[str] = set()
    stack: list[ast.AST] = list(ast.iter_child_nodes(body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name[:1].isupper():
                names.add(name)
        stack.extend(ast.iter_child_nodes(node))
    return names


def _sections(obj: griffe.Object) -> tuple[dict[str, list], list[str]]:
    """The parsed docstring's sections by kind, and the warnings griffe gave while parsing it."""
    handler = _Collect()
    log = logging.getLogger("griffe")
    log.addHandler(handler)
    try:
        parsed = obj.docstring.parse("google") if obj.docstring else []
    finally:
        log.removeHandler(handler)
    sections: dict[str, list] = {}
    for section in parsed:
        sections.setdefault(section.kind.value, []).extend(
            section.value if isinstance(section.value, list) else [section.value]
        )
    return sections, handler.messages


def docstring_problems(obj: griffe.Object) -> list[str]:
    """What is missing or wrong in ``obj``'s docstring (empty: it documents the entry point fully)."""
    if not obj.docstring or not obj.docstring.value.strip():
        return ["no docstring"]
    sections, warnings = _sections(obj)
    problems = [f"griffe: {w}" for w in warnings]
    if obj.is_class:
        post_init = obj.members.get("__post_init__")
        raised = _raised_directly(post_init.source) if post_init is not None else set()
        documented = {str(r.annotation) for r in sections.get("raises", [])}
        if raised - documented:
            problems.append(f"__post_init__ raises {sorted(raised - documented)}, not in the class's Raises")
        return problems

    wanted = [p.name for p in obj.parameters if p.name not in ("self", "cls")]
    params = [p.name.lstrip("*") for p in sections.get("parameters", [])]
    if params != wanted:
        problems.append(f"Args documents {params}, the signature has {wanted}")
    returns = obj.returns
    if obj.name != "__init__" and returns is not None and str(returns) != "None":
        if not sections.get("returns") and not sections.get("yields"):
            problems.append(f"no Returns (or Yields) section for a function returning {returns}")
    raised = _raised_directly(obj.source)
    documented = {str(r.annotation) for r in sections.get("raises", [])}
    if raised - documented:
        problems.append(
            f"raises {sorted(raised - documented)} without a Raises entry (documented: {sorted(documented)})"
        )
    return problems


def test_the_list_covers_the_public_api(package):
    """Every name ``from vehicle_cls import *`` gives is checked, and the walk finds the methods."""
    paths = {o.path for o in _entry_points(package)}
    for name in ("Pipeline.__init__", "Pipeline.stream", "Classifier.predict", "Cropper.from_zoo", "Result.to_json"):
        assert any(p.endswith(name) for p in paths), name
    assert len(paths) >= 60


def test_public_entry_points_document_args_returns_raises(package):
    failures = {o.path: p for o in _entry_points(package) if (p := docstring_problems(o))}
    assert not failures, "\n".join(f"{path}: {'; '.join(p)}" for path, p in sorted(failures.items()))


def test_the_check_fails_on_an_undocumented_parameter(tmp_path):
    """The checker itself: a parameter missing from Args, an extra one, a missing Returns and an
    undocumented raise are each reported."""
    source = '''
def documented(a: int, b: str = "") -> int:
    """Add.

    Args:
        a: one.
        b: two.

    Returns:
        The sum.

    Raises:
        ValueError: when a is negative.
    """
    if a < 0:
        raise ValueError("negative")
    return a


def undocumented_b(a: int, b: str = "") -> int:
    """Add.

    Args:
        a: one.

    Returns:
        The sum.
    """
    return a


def extra_c(a: int) -> int:
    """Add.

    Args:
        a: one.
        c: not a parameter.

    Returns:
        The sum.
    """
    return a


def no_returns_no_raises(a: int) -> int:
    """Add.

    Args:
        a: one.
    """
    if a < 0:
        raise ValueError("negative")
    return a
'''
    (tmp_path / "sample.py").write_text(source, encoding="utf-8")
    module = griffe.load("sample", search_paths=[str(tmp_path)], docstring_parser="google")
    assert docstring_problems(module["documented"]) == []
    assert any("the signature has ['a', 'b']" in p for p in docstring_problems(module["undocumented_b"]))
    problems = docstring_problems(module["extra_c"])
    assert any("Parameter 'c' does not appear in the function signature" in p for p in problems), problems
    problems = docstring_problems(module["no_returns_no_raises"])
    assert any("no Returns" in p for p in problems)
    assert any("raises ['ValueError']" in p for p in problems)
