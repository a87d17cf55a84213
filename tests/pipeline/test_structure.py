"""The house rules of the layout, checked on the source (no import is run): the framework
never imports a stage, no two modules import each other (at the top or inside a function), and a
module over ~400 lines says at its top why it is long."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("pipeline", "stages")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the project's packages."""
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, anywhere in it (`from a import b` is a.b when b is a
    module)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
    return {m for m in out if m in modules}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v: str) -> None:
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_framework_imports_no_stage():
    bad = [
        f"{name} imports {dep}"
        for name, deps in _graph().items()
        if name.startswith("pipeline")
        for dep in deps
        if dep.startswith("stages")
    ]
    assert bad == []


def test_no_two_modules_import_each_other():
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    """The check above can fail: a planted two-module cycle is found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(graph) == [["a", "b"]]


def test_long_modules_say_why_at_their_top():
    long = []
    for path in _modules().values():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and not any(x.startswith("# Long:") for x in lines[:20]):
            long.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
    assert long == []
