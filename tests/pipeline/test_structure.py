"""The house rules of the layout, checked on the source (no import is run): the framework
never imports a stage, no two modules import each other (at the top or inside a function), a
module over ~400 lines says at its top why it is long, no stage code outside the objective
registry compares the train objective to a name, no loss module imports an objective, and the
names listed in ONE_DEFINITION are defined once."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGES = ("pipeline", "stages")
MAX_LINES = 400
REGISTRY = "stages.train.objectives"  # the only stage code that may name an objective
LOSSES = "stages.train.losses"  # the loss library: it knows no objective
# Names that once had two definitions (or could easily get a second): each is defined once,
# at module level, in pipeline/ and stages/ together.
ONE_DEFINITION = (
    "ROOT",  # pipeline/paths.py
    "FLOOR",  # stages/shared/softlabels.py: the one minus infinity of logprob tables
    "free_port",  # pipeline/ports.py
    "divergence",  # stages/train/losses/divergence.py
    "kd_sum",
    "logit_term",
    "importance_sampled_loss",  # stages/train/losses/policy.py
    "sft_config",  # stages/train/args.py
    "shared_dir",  # stages/shared/layout.py
    "objective_of",  # stages/train/objectives/__init__.py
    "grade_row",  # stages/shared/verify.py: the one grader over rows
    "teacher_spec",  # stages/shared/models.py: how a stage asks a teacher ...
    "student_spec",  # ... and a student
)


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


def _names_objective(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "objective") or (
        isinstance(node, ast.Name) and node.id == "objective"
    )


def _is_name_literal(node: ast.AST) -> bool:
    """A string, or a tuple, list or set of them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return bool(node.elts) and all(_is_name_literal(e) for e in node.elts)
    return False


def objective_comparisons(source: str) -> list[int]:
    """Lines where `source` compares an `objective` to a string literal (==, !=, in, not in,
    either side), or matches on one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_names_objective(x) for x in sides) and any(_is_name_literal(x) for x in sides):
                found.append(node.lineno)
        elif isinstance(node, ast.Match) and _names_objective(node.subject):
            found.append(node.lineno)
    return found


def test_no_stage_code_outside_the_registry_compares_the_objective():
    """The train objective is asked of its registry (stages/train/objectives/), never compared
    to a name; the config's own validation (pipeline/config/) may name them."""
    bad = [
        f"{path.relative_to(ROOT)}:{line}"
        for name, path in _modules().items()
        if name.startswith("stages") and not name.startswith(REGISTRY)
        for line in objective_comparisons(path.read_text())
    ]
    assert bad == []


def test_the_objective_check_finds_a_comparison():
    """The check above can fail: each way of naming an objective is found."""
    planted = [
        'if cfg.train.objective == "kd": pass',
        'x = "onpolicy" != t.objective',
        'y = objective in ("kd", "features")',
        'match cfg.train.objective:\n    case "sft":\n        pass',
    ]
    assert [objective_comparisons(src) for src in planted] == [[1], [1], [1], [1]]
    assert objective_comparisons("z = OBJECTIVES[cfg.train.objective]; t.objective == other") == []


def test_no_loss_module_imports_an_objective():
    """The loss library (stages/train/losses/) is below the objectives: an objective imports
    its loss, never the other way round (at the top or inside a function)."""
    graph = _graph()
    bad = [
        f"{name} imports {dep}"
        for name, deps in graph.items()
        if name.startswith(LOSSES)
        for dep in deps
        if dep.startswith(REGISTRY)
    ]
    assert bad == []


def definitions(source: str) -> set[str]:
    """The names a module defines at its top level (assigned, annotated, def, class)."""
    out: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Assign):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out.add(node.target.id)
    return out


def test_each_listed_name_is_defined_once():
    where: dict[str, list[str]] = {name: [] for name in ONE_DEFINITION}
    for path in _modules().values():
        for name in definitions(path.read_text()) & set(ONE_DEFINITION):
            where[name].append(str(path.relative_to(ROOT)))
    assert {n: w for n, w in where.items() if len(w) != 1} == {}


def test_the_definition_check_finds_each_kind():
    src = "ROOT = 1\nx: int = 2\ndef f(): pass\nclass C: pass\nif True:\n    hidden = 3\n"
    assert definitions(src) == {"ROOT", "x", "f", "C"}
