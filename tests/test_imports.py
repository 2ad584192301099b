"""The package's import graph, read statically (every ``import`` statement, those inside functions
included, since an import deferred into a function still couples the two modules): no cycle, and
no module importing from a floor above its own (../shared/DESIGN.md):

    1 cells, kernels, data, datasets, digest, lazy  <  2 engine  <  3 layers, classic, seq2seq
    <  4 train, io, parallel  <  5 models, nnx, interop, keras, the ``jaxrnn`` facade
    <  6 tasks  <  7 cli, launch (the command-line front doors)

``jaxrnn.launch`` is floor 7: it is only the ``python -m jaxrnn.launch`` argument parser; the
process runner it calls is ``jaxrnn.parallel.launch`` (floor 4, usable from a program).
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "jaxrnn")

FLOORS = {
    "cells": 1, "kernels": 1, "data": 1, "datasets": 1, "digest": 1, "lazy": 1,
    "engine": 2,
    "layers": 3, "classic": 3, "seq2seq": 3,
    "train": 4, "io": 4, "parallel": 4,
    "models": 5, "nnx": 5, "interop": 5, "keras": 5, "": 5,  # "": jaxrnn/__init__.py
    "tasks": 6,
    "cli": 7, "launch": 7, "__main__": 7,
}

# Known exceptions, each with its reason: (importer, imported) -> why it is still there.
KNOWN_UPWARD: dict[tuple[str, str], str] = {}
KNOWN_CYCLES: dict[frozenset, str] = {}


def package_modules() -> dict[str, str]:
    """``{dotted module name: path}`` of every module under jaxrnn/."""
    out = {}
    for folder, dirs, files in os.walk(PACKAGE):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__pycache__"))]
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(folder, f)
    return out


def imported_modules(name: str, path: str, modules: dict[str, str]) -> set[str]:
    """The package modules that ``name`` (at ``path``) imports anywhere in its source.

    ``from pkg import x`` names the module ``pkg.x`` when that is a module, else ``pkg`` itself
    (a name defined in its ``__init__``)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                base = base if is_package else base[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            candidates = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                          for a in node.names]
        else:
            continue
        for c in candidates:
            # the deepest package module the dotted name reaches
            parts = c.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and parts[0] == "jaxrnn" and ".".join(parts) != name:
                targets.add(".".join(parts))
    return targets


def floor(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    if key not in FLOORS:
        raise AssertionError(f"{module}: no floor assigned; add its top-level name to FLOORS "
                             f"(and to ../shared/DESIGN.md)")
    return FLOORS[key]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {m: imported_modules(m, p, modules) for m, p in modules.items()}


def test_every_module_has_a_floor(graph):
    for m in graph:
        floor(m)


def test_no_module_imports_a_floor_above_its_own(graph):
    upward = sorted(
        f"{m} (floor {floor(m)}) imports {t} (floor {floor(t)})"
        for m, targets in graph.items() for t in targets
        if floor(t) > floor(m) and (m, t) not in KNOWN_UPWARD)
    assert not upward, "upward imports:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each listed with
    one cycle through it for the message."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    counter = [0]

    def visit(v):  # recursion depth is bounded by the ~100 modules of the package
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _one_cycle(graph, component) -> list[str]:
    """A shortest cycle through the component's first module (breadth first), for the message."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return component


def _without_facade_edges(graph):
    # A submodule importing a sibling through its own package (``from jaxrnn.train import x``
    # inside train/) closes a loop with the package's re-exporting __init__: that is how a facade
    # works, so an edge from a module to a package that contains it is left out.
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}


def test_no_import_cycle(graph):
    inner = _without_facade_edges(graph)
    found = [c for c in _cycles(inner) if frozenset(c) not in KNOWN_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(
        " -> ".join(_one_cycle(inner, c)) for c in found)


def test_the_graph_reads_imports_inside_functions():
    """The checker itself: an import written inside a function is an edge."""
    modules = package_modules()
    edges = imported_modules("jaxrnn.cli", modules["jaxrnn.cli"], modules)
    with open(modules["jaxrnn.cli"], encoding="utf-8") as f:
        top_level = {n.module for n in ast.parse(f.read()).body
                     if isinstance(n, ast.ImportFrom) and n.module}
    assert any(e not in top_level and e.startswith("jaxrnn.") for e in edges)


def test_the_checker_finds_a_cycle_and_ignores_a_facade():
    """The cycle finder on a small graph written out: a -> b -> c -> a is one cycle (however it
    is entered), d -> a is not in it; a package's own facade edge is dropped before searching."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _one_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    facade = {"p": {"p.x"}, "p.x": {"p"}}
    assert _cycles(facade) == [["p", "p.x"]] and _cycles(_without_facade_edges(facade)) == []
