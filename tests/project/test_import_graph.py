"""The vehicle_cls import graph has no cycle (module-level and function-level imports alike), so
every module can be imported on its own and responsibilities stay layered."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "vehicle_cls"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _graph() -> dict[str, set[str]]:
    """module -> the vehicle_cls modules it imports anywhere (not under ``if TYPE_CHECKING``);
    an import of an enclosing package is left out (Python runs that ``__init__`` first anyway)."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        targets: set[str | None] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vehicle_cls":
                targets |= {resolve(f"{node.module}.{a.name}") for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "vehicle_cls"}
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    graph = _graph()
    assert "vehicle_cls.pipeline" in graph["vehicle_cls.cli.predict"]  # the graph sees function-level imports
    assert _cycles(graph) == []


MODEL_PACKAGES = ("cropper", "classifier", "train", "data", "pipeline", "export", "serve", "distributed", "cli")


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for w in graph.get(todo.pop(), ()):
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def _is_cropper(module: str) -> bool:
    return module == "vehicle_cls.cropper" or module.startswith("vehicle_cls.cropper.")


def test_the_classifier_imports_nothing_from_the_cropper():
    """The classify stage takes ``crops.CropChoice`` values; it never reaches back into the choose stage,
    neither directly nor through another module. One shared module still leads there and is cut out
    here: ``weights`` (it checks a downloaded detector pickle with ``cropper.checkpoint``)."""
    graph = _graph()
    classifier = [m for m in graph if m == "vehicle_cls.classifier" or m.startswith("vehicle_cls.classifier.")]
    assert "vehicle_cls.classifier.keras.backend" in classifier
    direct = {m: sorted(t for t in graph[m] if _is_cropper(t)) for m in classifier}
    assert {m: r for m, r in direct.items() if r} == {}
    shared = {"vehicle_cls.weights"}
    cut_graph = {m: targets - shared for m, targets in graph.items()}
    reached = {m: sorted(t for t in _reaches(cut_graph, m) if _is_cropper(t)) for m in classifier}
    assert {m: r for m, r in reached.items() if r} == {}


def test_reaches_follows_imports_through_other_modules():
    assert _reaches({"a": {"b"}, "b": {"c"}, "c": set()}, "a") == {"b", "c"}


def _model_imports(graph: dict[str, set[str]], package: str) -> dict[str, list[str]]:
    """module of ``package`` -> the model modules it reaches through imports (directly or not)."""
    model = tuple(f"vehicle_cls.{p}" for p in MODEL_PACKAGES)
    found = {}
    for name in graph:
        if name == package or name.startswith(package + "."):
            bad = sorted(m for m in _reaches(graph, name) if m.startswith(model))
            if bad:
                found[name] = bad
    return found


def test_model_import_finder_sees_an_indirect_one():
    graph = {"vehicle_cls.io.a": {"vehicle_cls.results"}, "vehicle_cls.results": {"vehicle_cls.cropper.boxes"}}
    assert _model_imports(graph, "vehicle_cls.io") == {"vehicle_cls.io.a": ["vehicle_cls.cropper.boxes"]}


def test_input_stage_imports_no_model_package():
    graph = _graph()
    assert "vehicle_cls.io.decode" in graph
    assert _model_imports(graph, "vehicle_cls.io") == {}


def test_runtime_modules_import_no_test_fixture():
    """vehicle_cls.testing (synthetic weights) serves tests, benchmarks and examples only."""
    graph = _graph()
    assert "vehicle_cls.testing.synthetic" in graph
    users = sorted(m for m, deps in graph.items() if not m.startswith("vehicle_cls.testing")
                   and any(d.startswith("vehicle_cls.testing") for d in deps))
    assert users == []


#: the layers below ``pipeline``: the input stage, the two models, and the shared modules at the package root
BELOW_PIPELINE = ("vehicle_cls.io", "vehicle_cls.cropper", "vehicle_cls.classifier")
ABOVE_PIPELINE_ROOT = {"vehicle_cls", "vehicle_cls.__main__", "vehicle_cls.pipeline"}


def test_nothing_below_the_pipeline_imports_it():
    """Data flows one way: the stages the pipeline joins (and the root modules they share) never reach
    back into ``vehicle_cls.pipeline``, directly or through another module."""
    graph = _graph()
    below = [m for m in graph
             if m.startswith(tuple(p + "." for p in BELOW_PIPELINE)) or m in BELOW_PIPELINE
             or (m.count(".") == 1 and m not in ABOVE_PIPELINE_ROOT and m.split(".")[1] not in MODEL_PACKAGES)]
    assert "vehicle_cls.crops" in below and "vehicle_cls.cropper.cropper" in below
    reached = {m: True for m in below if "vehicle_cls.pipeline" in _reaches(graph, m) or "vehicle_cls.pipeline" in graph[m]}
    assert reached == {}
