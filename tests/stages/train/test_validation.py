"""stages/train/validation.py's choice, on measurements made by hand: select: best puts the
best candidate's weights (the first of equals) in model/, select: last keeps the last step's,
and only the kept candidate's weights stay on disk. Measuring through vLLM is in
tests/e2e/test_sweep.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import load_config
from stages.train.validation import RESULTS, Validator, select

MEASURED = [
    {"step": 2, "epoch": 0.5, "accuracy": 0.5, "correct": 5, "n": 10},
    {"step": 4, "epoch": 1.0, "accuracy": 0.8, "correct": 8, "n": 10},
    {"step": 6, "epoch": 1.5, "accuracy": 0.8, "correct": 8, "n": 10},
    {"step": 8, "epoch": 2.0, "accuracy": 0.6, "correct": 6, "n": 10},
]


def _validator(tmp_path: Path, how: str) -> Validator:
    cfg = load_config(None, [f"train.select={how}"])
    v = Validator(cfg, tmp_path, tok=None, lora=False, results=list(MEASURED))
    for r in MEASURED:
        model = v.candidate(r["step"]) / "model"
        model.mkdir(parents=True)
        (model / "weights").write_text(f"step {r['step']}")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_text("step 8")
    (tmp_path / "model" / "training_args.bin").write_bytes(b"the run's args")
    return v


def test_best_is_the_first_of_equals_and_replaces_the_last(tmp_path: Path):
    v = _validator(tmp_path, "best")
    stats = select(v, v.cfg, tmp_path, last_step=8)
    assert stats["selected_step"] == 4 and stats["selected_validation_accuracy"] == 0.8
    assert (tmp_path / "model" / "weights").read_text() == "step 4"
    # the run's training args stay in the run dir whichever step was kept (export drops them)
    assert (tmp_path / "model" / "training_args.bin").read_bytes() == b"the run's args"
    v.drop_weights()
    assert not any((v.candidate(r["step"]) / "model").exists() for r in MEASURED)


def test_last_keeps_the_last_step(tmp_path: Path):
    v = _validator(tmp_path, "last")
    stats = select(v, v.cfg, tmp_path, last_step=8)
    assert stats["selected_step"] == 8 and stats["selected_validation_accuracy"] == 0.6
    assert (tmp_path / "model" / "weights").read_text() == "step 8"
    assert stats["validation"] == MEASURED


def test_a_resumed_run_reads_what_was_measured(tmp_path: Path):
    cfg = load_config(None)
    rows = [{"id": f"step-{r['step']:06d}", **r} for r in MEASURED]
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    damaged = '{"id": "step-000007", "n": 4}\n'  # a line that is no measurement
    (tmp_path / RESULTS).write_text(
        lines + damaged + lines.splitlines(True)[0] + '{"step": 10, "accu'
    )
    v = Validator.of(cfg, tmp_path, tok=None)  # a repeat, and a kill mid-line, above
    assert v is not None and v.results == MEASURED and v.measured(6) and not v.measured(7)
    assert (tmp_path / RESULTS).read_text() == lines  # the torn line is gone before an append
    moved = (tmp_path / (RESULTS + ".quarantine")).read_text()  # nothing destroyed
    assert "step-000007" in moved and "repeats an earlier id" in moved


def test_a_measurement_is_appended_with_its_step_as_id(tmp_path: Path):
    from stages.train.validation import _append_result

    _append_result(tmp_path / RESULTS, MEASURED[0])
    _append_result(tmp_path / RESULTS, MEASURED[1])
    got = [json.loads(x) for x in (tmp_path / RESULTS).read_text().splitlines()]
    assert got == [{"id": f"step-{r['step']:06d}", **r} for r in MEASURED[:2]]
    v = Validator.of(load_config(None), tmp_path, tok=None)
    assert v is not None and v.results == MEASURED[:2]


@pytest.mark.parametrize("overrides", [["train.validate=false"], ["task.validation_fraction=0"]])
def test_nothing_to_validate_on(tmp_path: Path, overrides):
    assert Validator.of(load_config(None, overrides), tmp_path, tok=None) is None
