"""seeds stage: what it computes from each run's eval metrics (no model needed)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.stage import RunContext
from stages import seeds

ACC = {
    "configured": (0.52, 0.233, 0.75),
    "seed7": (0.52, 0.233, 0.737),
    "seed13": (0.52, 0.233, 0.847),
}


def _eval_dir(root: Path, label: str, acc: tuple[float, float, float]) -> Path:
    d = root / label
    d.mkdir()
    per = {
        m: {"accuracy": a, "ci_low": a - 0.05, "ci_high": a + 0.05, "n": 300}
        for m, a in zip(("teacher", "base", "student"), acc, strict=True)
    }
    metrics = {
        "questions": 300,
        "models": ["teacher", "base", "student"],
        "per_model": dict(sorted(per.items())),  # as written: sorted keys
        "mcnemar": {"student_vs_base": {"b10": 170, "b01": 15, "p_value": 1.9e-34}},
    }
    (d / "metrics.json").write_text(json.dumps(metrics, sort_keys=True))
    return d


def test_mean_spread_and_per_run_tests_in_eval_models_order(tmp_path: Path) -> None:
    inputs = {label: _eval_dir(tmp_path, label, acc) for label, acc in ACC.items()}
    out = tmp_path / "out"
    out.mkdir()
    stats = seeds.run(load_config(None, ["seeds=[7, 13]"]), RunContext.of(inputs, out))
    assert stats["seeds"] == 3
    result = json.loads((out / "seeds.json").read_text())
    student = result["per_model"]["student"]
    accs = [a[2] for a in ACC.values()]
    assert student["mean"] == pytest.approx(statistics.fmean(accs))
    assert student["sd"] == pytest.approx(statistics.stdev(accs))
    assert (student["min"], student["max"]) == (0.737, 0.847)
    assert result["per_model"]["teacher"]["sd"] == 0
    assert set(result["paired"]["student_vs_base"]) == set(ACC)
    md = (out / "seeds.md").read_text()
    rows = [ln.split("|")[1].strip() for ln in md.splitlines() if ln.startswith("| ")][1:]
    assert rows == ["teacher", "base", "student"]  # eval.models order, not alphabetical
    assert "| student | 77.8% | 6.0 | 73.7 - 84.7 |" in md
    assert seeds.summary(stats, out) == md
