"""The package's import graph, read from the source with ``ast`` (nothing is imported): no circles, and the layers
import only downwards.

Every import counts: module level, inside functions, and under ``if TYPE_CHECKING``. ``import a.b`` and
``from a.b import c`` are imports of ``a.b`` (its ``__init__`` if it is a package), or of ``a.b.c`` when that
is a module; relative imports are resolved against the importing module's package. Importing ``a.b.c`` is not
counted as importing the package ``a.b`` that Python runs first: a package's ``__init__`` re-exporting its
modules is no circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "fashion_retrieval"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

Graph = Mapping[str, set[str]]

# (modules of these parts, may not import these parts); a part is the name after ``fashion_retrieval.``:
# a subpackage (``store``) or a top-level module (``embeddings``).
FORBIDDEN: list[tuple[frozenset[str], frozenset[str]]] = [
    (frozenset({"store", "model"}), frozenset({"search", "pipeline", "serve", "cli", "evaluate", "train", "demo"})),
    (frozenset({"store"}), frozenset({"model"})),
    (
        frozenset({"embeddings", "identity", "errors", "files", "version"}),
        frozenset({"model", "pipeline", "store", "search", "serve", "cli"}),
    ),
    (frozenset({"search"}), frozenset({"serve", "cli", "pipeline", "train", "demo"})),
]
CLI_USERS = frozenset({"cli", "__main__"})  # the only parts that may import the command line


def module_names(root: Path = SRC, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file; a package is named by its ``__init__.py``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _known(name: str, modules: Iterable[str]) -> str | None:
    """``name`` if it is a module, else its longest prefix that is (``a.b.Class`` -> ``a.b``)."""
    modules = set(modules)
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, modules: Iterable[str], package: str = PACKAGE) -> set[str]:
    """The modules of ``package`` that ``module`` imports, anywhere in its file."""
    modules = set(modules)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                base_parts = here[: len(here) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target == package or target.startswith(package + "."):
                resolved = _known(target, modules)
                if resolved is not None and resolved != module:
                    found.add(resolved)
    return found


def import_graph(root: Path = SRC, package: str = PACKAGE) -> dict[str, set[str]]:
    names = module_names(root, package)
    return {module: imports_of(module, path, names, package) for module, path in names.items()}


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # iterative Tarjan: (node, iterator over its successors)
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_path(graph: Graph, component: list[str]) -> list[str]:
    """One circle through the first module of ``component``: ``[a, b, ..., a]`` (for the failure message)."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph.get(node, ())):
            if succ == start:
                return [*paths[node], start]
            if succ in members and succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    return component


def part(module: str) -> str:
    """The layer a module belongs to: ``fashion_retrieval.store.milvus`` -> ``store``; the package itself ->
    ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_violations(graph: Graph) -> list[str]:
    """``"a imports b"`` for each import that breaks a layer rule, with the rule it breaks."""
    broken = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            source_part, target_part = part(module), part(target)
            if source_part == target_part:
                continue
            for sources, banned in FORBIDDEN:
                if source_part in sources and target_part in banned:
                    broken.append(
                        f"{module} imports {target} ({'/'.join(sorted(sources))} may not import {target_part})"
                    )
            if target_part == "cli" and source_part not in CLI_USERS:
                broken.append(f"{module} imports {target} (only cli/ and __main__ may import cli)")
            if target == PACKAGE and module != PACKAGE:
                broken.append(f"{module} imports {target} (the package's lazy public face; import the defining module)")
    return broken


# -- the package -------------------------------------------------------------------------------------------


def test_the_graph_is_read():
    """A parser that finds nothing would pass everything: check a few edges of each kind."""
    graph = import_graph()
    assert len(graph) > 50
    assert "fashion_retrieval.search.queries" in graph["fashion_retrieval.search.searcher"]  # module level
    assert "fashion_retrieval.model.encoder" in graph["fashion_retrieval.search.searcher"]  # in a function
    assert "fashion_retrieval.identity" in graph["fashion_retrieval.pipeline.ray_engine"]  # under TYPE_CHECKING
    assert "fashion_retrieval.store" in graph["fashion_retrieval.search.searcher"]  # a package, by its __init__
    assert "fashion_retrieval.pipeline.stages" in graph["fashion_retrieval.pipeline.embed"]  # from pkg import module


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import circles:\n" + "\n".join(
        f"{', '.join(c)} (e.g. {' -> '.join(cycle_path(graph, c))})" for c in found
    )


def test_layers_import_only_downwards():
    broken = layer_violations(import_graph())
    assert not broken, "imports across layers:\n" + "\n".join(broken)


# -- the checks themselves -----------------------------------------------------------------------------------


def test_a_circle_is_found_and_named():
    graph = {
        "fashion_retrieval.a": {"fashion_retrieval.b"},
        "fashion_retrieval.b": {"fashion_retrieval.c"},
        "fashion_retrieval.c": {"fashion_retrieval.a", "fashion_retrieval.d"},
        "fashion_retrieval.d": set(),
        "fashion_retrieval.e": {"fashion_retrieval.f"},
        "fashion_retrieval.f": {"fashion_retrieval.e"},
    }
    found = cycles(graph)
    assert found == [
        ["fashion_retrieval.a", "fashion_retrieval.b", "fashion_retrieval.c"],
        ["fashion_retrieval.e", "fashion_retrieval.f"],
    ]
    assert cycle_path(graph, found[0]) == [
        "fashion_retrieval.a",
        "fashion_retrieval.b",
        "fashion_retrieval.c",
        "fashion_retrieval.a",
    ]
    assert cycles({"fashion_retrieval.a": {"fashion_retrieval.b"}, "fashion_retrieval.b": set()}) == []


def test_a_layer_break_is_found_and_named():
    graph = {
        "fashion_retrieval.store.memory": {"fashion_retrieval.model.encoder", "fashion_retrieval.store.base"},
        "fashion_retrieval.search.queries": {"fashion_retrieval.serve.app"},
        "fashion_retrieval.embeddings": {"fashion_retrieval"},
        "fashion_retrieval.pipeline.embed": {"fashion_retrieval.cli"},
        "fashion_retrieval.__main__": {"fashion_retrieval.cli"},
        "fashion_retrieval.cli.embed": {"fashion_retrieval.pipeline.embed", "fashion_retrieval.cli.common"},
    }
    broken = layer_violations(graph)
    assert [b.split(" (")[0] for b in broken] == [
        "fashion_retrieval.embeddings imports fashion_retrieval",
        "fashion_retrieval.pipeline.embed imports fashion_retrieval.cli",
        "fashion_retrieval.search.queries imports fashion_retrieval.serve.app",
        "fashion_retrieval.store.memory imports fashion_retrieval.model.encoder",
    ]


def test_imports_are_resolved_like_python(tmp_path):
    """Relative, ``from pkg import module``, ``from module import name``, and imports outside the package."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "low.py": "import os\nimport numpy\n",
        "sub/__init__.py": "from .leaf import X\n",
        "sub/leaf.py": "X = 1\n",
        "sub/user.py": (
            "from typing import TYPE_CHECKING\n"
            "from .. import low\n"
            "from . import leaf\n"
            "from pkg.sub import X\n"
            "if TYPE_CHECKING:\n"
            "    import pkg.low\n"
            "def f():\n"
            "    from ..sub.leaf import X\n"
        ),
    }
    for name, text in files.items():
        (root / name).write_text(text)
    assert import_graph(root, "pkg") == {
        "pkg": set(),
        "pkg.low": set(),
        "pkg.sub": {"pkg.sub.leaf"},
        "pkg.sub.leaf": set(),
        "pkg.sub.user": {"pkg.low", "pkg.sub", "pkg.sub.leaf"},
    }
