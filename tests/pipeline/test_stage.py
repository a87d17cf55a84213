"""The stage contract (pipeline/stage.py) and the house rules that keep the layout honest."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline.config import load_config, shipped_config
from pipeline.runner import STAGES, chain, plan, stage_module, unique
from pipeline.stage import OPTIONAL, KeyParts, Stage, hook, stage_help


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_provides_the_contract(name: str) -> None:
    mod = stage_module(name)
    assert isinstance(mod, Stage)
    assert mod.NAME == name and isinstance(mod.VERSION, int)
    assert isinstance(mod.OUTPUTS, tuple) and mod.OUTPUTS and isinstance(mod.UPSTREAM, tuple)
    assert set(mod.UPSTREAM) <= set(STAGES[: STAGES.index(name)])  # only earlier stages
    assert mod.HELP and "\n" not in mod.HELP and len(mod.HELP) < 80
    cfg = load_config(shipped_config("default"))
    assert isinstance(mod.key_parts(cfg), KeyParts)
    assert all(x.stage in STAGES for x in hook(mod, "extra_inputs")(cfg))
    assert stage_help(name) == mod.HELP  # what `distill --help` reads without importing it
    for member in OPTIONAL:  # an optional member a stage gives is callable
        assert hook(mod, member) is None or callable(hook(mod, member))


@pytest.mark.parametrize("helper", ["dedup", "shared", "train_preflight", "filter.dedup", "x"])
def test_helpers_are_not_stages(helper: str) -> None:
    with pytest.raises(ValueError, match="is not a stage"):
        stage_module(helper)


def test_the_ablation_is_declared_by_eval_not_known_to_the_runner() -> None:
    cfg = load_config(shipped_config("answer_only"))  # eval.models has student_answer_only
    steps = {s.label: s for s in chain(cfg, "eval")}
    ablation = steps["train_answer_only/train"]
    assert ablation.stage == "train" and ablation.cfg.train.answer_only
    assert ("train_answer_only", "train_answer_only/train") in steps["eval"].inputs
    assert not any(s.label.startswith("train_answer_only") for s in chain(cfg, "train"))
    # Its generate and filter come out the same as the main ones: planned once, run once.
    plans = plan(cfg, "eval")
    assert plans["train_answer_only/filter"] is plans["filter"]
    assert len(unique(plans)) == 5
    runner = (ROOT / "pipeline" / "runner.py").read_text()
    assert "answer_only" not in runner and "ablation" not in runner.lower()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_no_stage_imports_another_stage() -> None:
    for name in STAGES:
        for path in (ROOT / "stages" / name).rglob("*.py"):
            for mod in _imports(path):
                parts = mod.split(".")
                if parts[0] == "stages" and len(parts) > 1:
                    assert parts[1] in (name, "shared"), f"{path} imports {mod}"


def test_framework_imports_no_ml_library_at_module_level() -> None:
    heavy = ("torch", "transformers", "trl", "vllm", "peft", "datasets", "accelerate", "numpy")
    mods = [f"pipeline.{p.stem}" for p in (ROOT / "pipeline").glob("*.py")]
    code = "import sys\n" + "".join(f"import {m}\n" for m in mods)
    code += f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))"
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]", p.stdout
    for path in (ROOT / "pipeline").glob("*.py"):  # and none of them in the framework at all
        assert not {m.split(".")[0] for m in _imports(path)} & {"torch", "transformers", "trl"}


def test_long_functions_say_why() -> None:
    """No function over 60 lines without a docstring that gives the reason."""
    long = []
    for path in [*ROOT.glob("pipeline/*.py"), *ROOT.glob("stages/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if n > 60 and "long" not in doc.lower():
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_seeds_run_one_chain_per_seed_and_share_nothing_else() -> None:
    cfg = load_config(shipped_config("default"), ["seeds=[1, 7, 13]"])
    plans = plan(cfg, "seeds")
    assert plans["seeds"].inputs.keys() == {"configured", "seed1", "seed7", "seed13"}
    evals = [plans[f"seed{s}/eval"] for s in (1, 7, 13)]
    assert len({e.key for e in evals}) == 3
    for s, e in zip((1, 7, 13), evals, strict=True):
        assert e.cfg.generate.sampling.seed == s and e.cfg.train.seed == s
    assert len(unique(plans)) == 17  # 4 x (generate, filter, train, eval) + seeds
    # The chain as configured is one of them, with the very same keys as `distill run`'s.
    main = plan(load_config(shipped_config("default")), "eval")
    assert plans["configured/eval"].key == main["eval"].key
