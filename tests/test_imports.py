"""The import graph of as3l_plugin: every module imports alone, and no module-level cycles.

The graph is built with ``ast`` from the module-level ``import`` / ``from`` statements (also
those inside a module-level ``if`` / ``try``; never those inside a function, which run late
and are the way to point an import upwards). An edge from a module to one of its own parent
packages is left out: Python initialises the parents first, whatever the child imports.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import as3l_plugin

ROOT = Path(as3l_plugin.__file__).resolve().parent
PKG = "as3l_plugin"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _top_level(body):
    """Module-level statements, descending into ``if`` / ``try`` / ``with`` blocks only."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            test = node.test
            if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
                    isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING":
                continue
            yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _top_level(block)
            for h in node.handlers:
                yield from _top_level(h.body)
        elif isinstance(node, ast.With):
            yield from _top_level(node.body)


def _imports(name: str, path: Path, *, late: bool = False) -> set:
    """The package modules ``name`` imports at module level (``late``: anywhere, also inside
    functions)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text(), str(path))
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] \
        if late else _top_level(tree.body)
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod
                       for a in node.names]
        for t in targets:
            while t and t not in MODULES and t.startswith(PKG):  # a name inside a module
                t = t.rpartition(".")[0]
            if t in MODULES and t != name and not name.startswith(t + "."):
                out.add(t)
    return out


def import_graph() -> dict:
    return {name: _imports(name, path) for name, path in MODULES.items()}


def find_cycles(graph: dict) -> list:
    """The strongly connected components with more than one module (Tarjan), each with one
    cycle through it spelled out."""
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for comp in comps:  # one cycle through the component's first module (breadth-first)
        start, members = comp[0], set(comp)
        prev, frontier = {start: None}, [start]
        found = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        nxt.append(w)
                if found is not None:
                    break
            frontier = nxt
        path, v = [], found
        while v is not None:
            path.append(v)
            v = prev[v]
        cycles.append(" -> ".join(reversed(path)) + " -> " + start)
    return cycles


def test_graph_sees_the_package():
    g = import_graph()
    assert len(g) == len(MODULES) > 20
    assert "as3l_plugin.errors" in g["as3l_plugin.validate"]  # a plain relative import
    assert "as3l_plugin.pipeline" in g["as3l_plugin.bench"]   # `from . import pipeline as pl`
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a -> b -> c -> a"]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "module-level import cycles among as3l_plugin modules:\n" + \
        "\n".join(cycles)


@pytest.mark.parametrize("chunk", range(2))
@pytest.mark.slow
def test_every_module_imports_alone(chunk):
    """Each module in a fresh interpreter of its own (an import-order bug shows only there)."""
    # __main__ is the console entry: importing it runs the CLI (tests/test_reliability_cases.py)
    names = [m for m in sorted(MODULES) if m != "as3l_plugin.__main__"][chunk::2]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}

    def one(name):
        proc = subprocess.run([sys.executable, "-c", "import importlib, sys; "
                               "importlib.import_module(sys.argv[1])", name],
                              capture_output=True, text=True, env=env, timeout=600)
        return name, proc.returncode, proc.stderr.strip().splitlines()[-1:] or [""]

    with ThreadPoolExecutor(max_workers=4) as pool:
        failed = [f"{n}: {err[0]}" for n, rc, err in pool.map(one, names) if rc != 0]
    assert not failed, "modules that fail to import alone:\n" + "\n".join(failed)


def test_stage_runner_knows_no_job():
    """The cached-stage runner is generic: it reads files, raises errors and reads the CPU clock,
    nothing more."""
    assert import_graph()["as3l_plugin.stages"] <= {"as3l_plugin.errors", "as3l_plugin.io",
                                                  "as3l_plugin.timing"}


WORKFLOW = {"as3l_plugin.stages", "as3l_plugin.pipeline", "as3l_plugin.bench",
            "as3l_plugin.report"}


def _layer(name: str) -> int:
    """0: library, 1: workflow, 2: CLI, 3: benchmark scripts (may use any layer below)."""
    if name.startswith("as3l_plugin.benchmarks"):
        return 3
    if name in ("as3l_plugin.cli", "as3l_plugin.__main__") or \
            name.startswith("as3l_plugin.commands"):
        return 2
    return 1 if name in WORKFLOW else 0


def test_layers_point_down():
    """library ← workflow (stages, pipeline, bench, report) ← CLI (cli, commands/): no module
    imports one of a higher layer, not even inside a function."""
    up = sorted(f"{m} -> {t}" for m, p in MODULES.items() for t in _imports(m, p, late=True)
                if _layer(t) > _layer(m))
    assert not up, "imports that point up a layer:\n" + "\n".join(up)
