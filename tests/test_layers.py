"""The import structure: no circle between modules, and the layers of docs/ARCHITECTURE.md hold.

The graph has an edge from module A to module B when A imports B anywhere (at the top or inside a
function: a lazy import is still a dependency), read from the source with ``ast``. ``from pkg
import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``. A package's own
``__init__`` importing its submodules (to re-export or register them) is an edge like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "mmsec"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (SRC / PACKAGE).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            for t in targets:
                while t and t not in modules and "." in t:  # `import a.b.c` of a non-module attribute
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


# Packages that hold methods, and what they must never import (docs/ARCHITECTURE.md, "Layers").
METHOD_PACKAGES = ("mmsec.attacks", "mmsec.defenses", "mmsec.merging")
LEAVES = ("mmsec.registry", "mmsec.checks", "mmsec.metrics", "mmsec.version", "mmsec.progress", "mmsec.fingerprint")


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_methods_never_import_the_runner_or_the_cli():
    graph = import_graph()
    bad = [(m, t) for m, targets in graph.items() if any(_under(m, p) for p in METHOD_PACKAGES)
           for t in targets if _under(t, "mmsec.runs") or t in ("mmsec.cli", "mmsec.builtins", "mmsec.quickstart")]
    assert not bad, f"methods importing the runner / CLI: {bad}"


def test_leaves_import_nothing_from_mmsec():
    graph = import_graph()
    bad = [(m, t) for m in LEAVES if m in graph for t in graph[m]]
    assert not bad, f"leaf modules importing mmsec: {bad}"
    assert graph["mmsec.methods"] <= {"mmsec.registry"}


def test_lower_layers_do_not_import_upper_ones():
    """data imports only leaves; models import data and leaves (a zoo loader registers itself from above)."""
    graph = import_graph()
    upper = ("mmsec.attacks", "mmsec.defenses", "mmsec.merging", "mmsec.evaluation", "mmsec.runs", "mmsec.zoo",
             "mmsec.cli", "mmsec.train")
    for low, forbidden in (("mmsec.data", upper + ("mmsec.models",)), ("mmsec.models", upper)):
        bad = [(m, t) for m, targets in graph.items() if _under(m, low) for t in targets
               if any(_under(t, f) for f in forbidden)]
        assert not bad, f"{low} imports an upper layer: {bad}"
