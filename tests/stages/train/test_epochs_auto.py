"""train.epochs: auto (stages/train/epochs.py, issue 48): the stop rule on measurements made by
hand, and the config it needs. Training that stops by it is in tests/e2e/test_chain.py."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, load_config, shipped_config
from pipeline.runner import plan, unique
from pipeline.tasks import Question
from stages.shared.advice import train_advice
from stages.shared.intervals import noise
from stages.train.epochs import EpochStop, each_epoch_cosine, planned_epochs, verdict


def _m(*accs: float) -> list[dict]:
    return [
        {"step": 10 * i, "epoch": float(i), "accuracy": a, "correct": 0, "n": 40}
        for i, a in enumerate(accs, 1)
    ]


def test_a_rise_beyond_noise_goes_on_and_a_rise_within_it_does_not():
    # 40 questions: at 43% the 95% interval's half-width is about 15 points
    assert 0.14 < noise(0.43, 40) < 0.16
    assert not verdict(_m(0.43, 0.62), 40, patience=1, most=5).stop  # +19: learning
    stop = verdict(_m(0.43, 0.62, 0.65), 40, patience=1, most=5)  # +3: noise
    assert stop.stop and "since epoch 2 (62.0%" in stop.why and "after epoch 3" in stop.why
    # patience 2 waits an epoch more; a real rise after a flat one resets it
    assert not verdict(_m(0.43, 0.62, 0.65), 40, patience=2, most=5).stop
    assert not verdict(_m(0.2, 0.22, 0.6), 40, patience=2, most=5).stop
    assert verdict(_m(0.2, 0.22, 0.6, 0.6, 0.61), 40, patience=2, most=9).stop


def test_it_stops_at_max_epochs_still_rising_and_counts_groups_not_questions():
    last = verdict(_m(0.1, 0.4, 0.7), 40, patience=1, most=3)
    assert last.stop and "max_epochs (3), still rising" in last.why
    # 40 questions in 5 split groups resolve what 5 would: +19 points is noise there
    assert verdict(_m(0.43, 0.62), 5, patience=1, most=5).stop
    cfg = load_config(None, ["train.epochs=auto"])
    qs = [Question(f"q{i}", "?", "1", group=f"g{i % 5}") for i in range(40)]
    rule = EpochStop.of(cfg, qs)
    assert rule is not None and rule.units == 5


def test_the_rule_reads_epoch_ends_and_remembers_the_step():
    rule = EpochStop(units=40, patience=1, most=5)
    mid = {"step": 15, "epoch": 1.5, "accuracy": 0.9, "correct": 0, "n": 40}  # not an epoch end
    got = rule.check([*_m(0.4)[:1], mid, *_m(0.4, 0.41)[1:]])
    assert got.stop and rule.step == 20
    assert rule.stats(2.0)["epochs_auto"] == {"ran": 2.0, "max_epochs": 5, "why": got.why}


def test_the_schedule_spans_max_epochs_and_without_validation_two():
    cfg = load_config(None, ["train.epochs=auto", "train.max_epochs=6"])
    assert planned_epochs(cfg, validating=True) == 6.0
    assert planned_epochs(cfg, validating=False) == 2.0
    assert planned_epochs(load_config(None, ["train.epochs=3"]), validating=True) == 3.0
    assert EpochStop.of(load_config(None), [Question("q", "?", "1")]) is None  # fixed epochs


def test_each_epoch_anneals_to_zero_and_restarts_at_the_peak():
    # 100 steps an epoch, warmup 0.05 of the first; f(s) is the rate of step s + 1
    f = each_epoch_cosine(100, 0.05)
    assert [f(0), f(1), f(5)] == [0.0, 0.2, 1.0]
    for end in (100, 200, 300):  # each epoch's last step is annealed, wherever training stops
        assert f(end - 1) < 1e-3
        assert f(end) == 1.0  # the next epoch starts again at the peak
        cycle = [f(s) for s in range(end, end + 100)]
        assert cycle == sorted(cycle, reverse=True)
    assert f(150) == pytest.approx(0.5)  # halfway through the second epoch's cosine


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["train.validate=false"], "set train.validate: true"),
        (["train.max_steps=10"], "train.max_steps fixes the length"),
        (["train.validate_every=5"], "set train.validate_every: 0"),
        (["train.select=last"], "set train.select: best"),
        (["train.lr_scheduler=linear"], "set train.lr_scheduler: cosine"),
    ],
)
def test_auto_needs_validation_at_epoch_ends_in_one_line(overrides, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.epochs=auto", *overrides])
    assert "train.epochs" in str(e.value) and words in str(e.value)
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=often"])


def test_advice_under_auto_only_when_max_epochs_ran_out():
    cfg = load_config(None, ["train.epochs=auto", "train.max_epochs=3"])
    assert train_advice(cfg, _m(0.4, 0.45)) == []  # the rule stopped it within noise
    (line,) = train_advice(cfg, _m(0.1, 0.4, 0.7))
    assert "train.max_epochs, 3 now" in line
    (fixed,) = train_advice(load_config(None), _m(0.4, 0.7))
    assert "train.epochs, 2 now" in fixed


def test_a_student_of_autos_first_schedule_is_not_reused():
    """epochs: auto first spanned one cosine over max_epochs (its students stopped unannealed);
    their train key is not this schedule's, and the default's key has not moved."""
    keys = {}
    for extra in ([], ["train.epochs=auto"]):
        plans = unique(plan(load_config(shipped_config("default"), extra), "train"))
        keys[bool(extra)] = next(p.key for p in plans if p.name == "train")
    assert keys[False] == "b88dbc93af6b22d9a61067ef3003602bd6e48436f422d43fe880f9bf67448368"
    assert keys[True] not in (
        "8e6c313ff8dd04807e91fe12a080ae73647f37c63dff777ff77df76b4cbb46d0",  # one cosine
        keys[False],
    )
