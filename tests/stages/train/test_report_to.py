"""train.report_to: the knob (keyed nowhere, checked at load), and TensorBoard read back: a real
short TRL run logs its loss and validation accuracy into the stage dir's tracker/ at the steps and
values of train_log.jsonl and validation.jsonl, under a run named after the stage key; on-policy
rounds log a round per step. Validation here asks no vLLM server (Validator._ask answers from a
fixed list): the callback, the grading and the logging are the real ones; asking through vLLM is
tests/e2e/test_sweep.py's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train import filter_dir, make_cfg  # noqa: F401 - the fixture and the config

from pipeline.config import ConfigError, load_config, semantic
from pipeline.stage import RunContext
from stages import train
from stages.train.tracking import TRACKER_DIR, report_rounds, round_scalars
from stages.train.validation import Validator

KEY = "0123456789ab"  # a stage dir is named by its key's first 12 characters (pipeline/runner.py)


def _events(logdir: Path):
    """Every scalar and text TensorBoard wrote under `logdir`, read back by its own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_report_to_is_in_no_key_and_defaults_to_none() -> None:
    plain = load_config(None)
    tracked = load_config(None, ["train.report_to=tensorboard"])
    assert plain.train.report_to == "none" and tracked.train.report_to == "tensorboard"
    assert semantic(tracked.train) == semantic(plain.train)  # the train key and round chain


@pytest.mark.parametrize("name", ["tensorboard", "trackio", "wandb", "mlflow"])
def test_a_tracker_not_installed_is_one_line_naming_its_extra(monkeypatch, name) -> None:
    import pipeline.config.train as section

    found = section.find_spec
    monkeypatch.setattr(section, "find_spec", lambda m: None if m == name else found(m))
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"train.report_to={name}"])
    msg = str(e.value)
    assert msg.startswith(f"train.report_to: {name} needs the Python package '{name}'"), msg
    assert f"pip install 'distill[{name}]'" in msg and "\n" not in msg


def test_round_scalars_are_the_rounds_numbers() -> None:
    row = {
        "round": 2,
        "loss": 0.5,
        "reverse_kl": 0.25,
        "correct": 0.4,
        "verified": 0.375,
        "validation_accuracy": None,  # not validated: left out, not logged as 0
        "rollouts": 8,
        "seconds": {"rollouts": 1.5, "update": 2.0},
    }
    assert round_scalars(row) == {
        "loss": 0.5,
        "reverse_kl": 0.25,
        "correct": 0.4,
        "verified": 0.375,
        "rollouts": 8.0,
        "seconds_rollouts": 1.5,
        "seconds_update": 2.0,
    }


def test_onpolicy_rounds_reach_tensorboard_a_round_per_step(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.report_to=tensorboard", "run=tb"])
    rows = [
        {"round": r, "loss": 0.1 * r, "reverse_kl": 1.0 / r, "verified": 0.25 * r}
        | {"validation_accuracy": 0.5 + 0.125 * r, "seconds": {"update": float(r)}}
        for r in (1, 2, 3)
    ]
    out = tmp_path / "train" / KEY
    report_rounds(cfg, out, rows)
    acc = _events(out / TRACKER_DIR)
    for key in ("loss", "reverse_kl", "verified", "validation_accuracy"):
        got = _scalars(acc, f"train/{key}")
        assert [s for s, _ in got] == [1, 2, 3], key
        assert [v for _, v in got] == pytest.approx([r[key] for r in rows]), key
    assert _run_args(acc)["run_name"] == f"tb-train-{KEY}"


def _run_args(acc) -> dict:
    """The training arguments the TensorBoard callback wrote as text at the run's start."""
    (event,) = acc.Tensors("args/text_summary")
    return json.loads(event.tensor_proto.string_val[0])


@pytest.mark.slow  # a real TRL run of 4 steps on the tiny model
def test_tensorboard_holds_the_loss_and_validation_of_train_log(
    tiny_model,
    tmp_path,
    filter_dir,  # noqa: F811 - the fixture
    monkeypatch,
):
    calls: list[Path] = []

    def answers(self: Validator, here: Path) -> dict[str, dict]:
        """Step 2 answers every second question right, step 4 three in four: two accuracies."""
        calls.append(here)
        right = (lambda i: i % 2 == 0) if len(calls) == 1 else (lambda i: i % 4 != 0)
        return {
            f"validation:{q.id}": {
                "completion": f"Answer: {q.answer if right(i) else '-12345'}",
                "finish_reason": "stop",
            }
            for i, q in enumerate(self.questions)
        }

    monkeypatch.setattr(Validator, "_ask", answers)
    cfg = make_cfg(
        tiny_model,
        tmp_path,
        "run=tb",
        "train.max_steps=4",
        "train.validate=true",
        "train.validate_every=2",
        "train.report_to=tensorboard",
    )
    out = tmp_path / "runs" / "tb" / "train" / KEY
    train.run(cfg, RunContext.of({"filter": filter_dir}, out))

    logged = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in logged if "loss" in r]
    measured = [json.loads(x) for x in (out / "validation.jsonl").read_text().splitlines()]
    assert [s for s, _ in losses] == [2, 4] and [m["step"] for m in measured] == [2, 4]
    assert measured[0]["accuracy"] != measured[1]["accuracy"]

    acc = _events(out / TRACKER_DIR)
    assert _scalars(acc, "train/loss") == [(s, pytest.approx(v, rel=1e-6)) for s, v in losses]
    assert _scalars(acc, "train/validation_accuracy") == [
        (m["step"], pytest.approx(m["accuracy"], rel=1e-6)) for m in measured
    ]
    args = _run_args(acc)
    assert args["run_name"] == f"tb-train-{KEY}" and args["report_to"] == ["tensorboard"]
