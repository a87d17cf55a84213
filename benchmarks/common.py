"""What the benchmark scripts share: the repo on sys.path, the tiny model, running the CLI and
reading a stage's manifest."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def tiny_model(workdir: Path) -> Path:
    """The tiny random test model (tests/tiny_model.py), built once under `workdir`."""
    from tiny_model import build_tiny_model

    return build_tiny_model(workdir / "tiny")


def distill(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`distill ARGS` in a fresh interpreter; exits the benchmark with its output if it fails."""
    import os

    p = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if p.returncode != 0:
        sys.exit(f"distill {args[0]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p


def stage_dir(stage: str, overrides: list[str], config: Path | None = None) -> Path:
    """The dir of `stage` under these overrides (of `config`, or the bundled default)."""
    from pipeline.config import load_config, shipped_config
    from pipeline.runner import plan

    cfg = load_config(config or shipped_config("default"), overrides)
    return plan(cfg, stage)[stage].dir


def correct_by_question(eval_dir: Path, model: str = "student") -> dict[str, bool]:
    """question id -> whether `model`'s answer was right, from an eval stage's predictions."""
    rows = (json.loads(x) for x in (eval_dir / "predictions.jsonl").read_text().splitlines() if x)
    return {r["question_id"]: bool(r.get("correct")) for r in rows if r["model"] == model}


def stage_stats(d: Path) -> dict:
    """The manifest stats of the stage in `d`."""
    return json.loads((d / "manifest.json").read_text())["stats"]


def mcnemar_per_seed(first: dict[int, dict[str, bool]], other: dict[int, dict[str, bool]]) -> str:
    """Per seed, the exact McNemar test of `other` against `first` on the same questions
    (question id -> right), as 'seed S: only-other vs only-first, p = P'."""
    from stages.eval.metrics import mcnemar_exact

    tests = []
    for seed, a in first.items():
        b, qs = other[seed], sorted(a)
        t = mcnemar_exact([b[q] for q in qs], [a[q] for q in qs])
        tests.append(f"seed {seed}: {t['b10']} vs {t['b01']}, p = {t['p_value']:.2g}")
    return "; ".join(tests)
