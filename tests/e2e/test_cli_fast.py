"""`distill --help` and `distill <stage> --help` stay fast: they import neither torch nor vLLM.

Each check runs in a fresh interpreter so modules other tests imported don't hide an import.
No timing asserts (timings depend on the machine); the time is printed for the log.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

HEAVY = ("torch", "vllm", "transformers", "trl")


def _imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from `python -X importtime` output ('import time: self | cumul | name')."""
    names = set()
    for line in importtime_stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":
                names.add(name)
    return names


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["run", "--help"]])
def test_help_imports_no_ml_stack(argv: list[str]) -> None:
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline.cli", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - t0
    print(f"distill {' '.join(argv)}: {elapsed:.2f}s")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "usage: distill" in p.stdout
    mods = _imported_modules(p.stderr)
    assert "pipeline.cli" in mods or "pipeline.config" in mods  # importtime output was parsed
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY)
    assert heavy == [], f"--help imported {heavy[:10]}"


def test_help_lists_every_command() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    for cmd in ("generate", "filter", "train", "eval", "run", "status"):
        assert cmd in p.stdout
    g = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--force" in g.stdout and "--config" in g.stdout


CLEAN_CHECK = """
import sys
from pipeline.cli import main, parser
from pipeline.config import load_config
for argv in (["generate", "generate.n=3"], ["status", "run=x"], ["train", "--launcher", "none"]):
    parser().parse_args(argv)
load_config(None, ["generate.n=3", "teacher.endpoint=[http://a/v1]"])
try:
    main(["generate", "--help"])
except SystemExit as e:
    assert e.code == 0, e.code
bad = main(["generate", "generate.nope=1"])  # config errors are reported before any stage code
print("RC", bad)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy})
print("HEAVY", heavy)
"""


def test_parsing_and_config_errors_import_no_ml_stack() -> None:
    code = CLEAN_CHECK.replace("{heavy}", repr(set(HEAVY)))
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    print(f"parse + config + --help in a clean interpreter: {time.monotonic() - t0:.2f}s")
    assert p.returncode == 0, p.stderr[-2000:]
    assert "RC 2" in p.stdout
    assert "generate.nope" in p.stderr
    assert "HEAVY []" in p.stdout, p.stdout


def test_console_script_help() -> None:
    exe = Path(sys.executable).with_name("distill")
    if not exe.exists():
        pytest.skip("distill console script not installed next to this python")
    p = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "usage: distill" in p.stdout
