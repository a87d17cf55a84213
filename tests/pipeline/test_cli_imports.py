"""`distill --help`, `config`, `status` and a bad input import only what they use: printing help
must never pay for the serving stack, numpy or the ML libraries (a test of imports, not of time;
the time is in the README)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

HEAVY = ("httpx", "aiohttp", "numpy", "torch", "vllm", "transformers", "trl")

PROBE = """
import contextlib, io, json, sys
from pipeline.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as e:
        rc = e.code
print(json.dumps({"rc": rc, "modules": sorted(sys.modules)}))
"""


def _loaded(*args: str) -> tuple[int, set[str]]:
    p = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return out["rc"], set(out["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


@pytest.mark.parametrize(
    "args, rc",
    [
        (["--help"], 0),
        (["train", "--help"], 0),
        (["config"], 0),
        (["run", "no_such.key=1"], 2),  # a bad input: one line, exit 2
        (["generate", "task.eval_fraction=7"], 2),
    ],
)
def test_help_config_and_bad_input_import_no_stage_and_no_ml(args, rc):
    got, modules = _loaded(*args)
    assert got == rc
    assert _heavy(modules) == []
    assert sorted(m for m in modules if m.startswith("stages.")) == []


def test_status_imports_the_stages_but_not_the_serving_stack(tmp_path):
    got, modules = _loaded("status", f"runs_dir={tmp_path}")
    assert got == 0
    assert "stages.generate" in modules  # status keys every stage: it needs their key_parts
    assert _heavy(modules) == []
