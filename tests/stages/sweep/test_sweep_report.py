"""stages/sweep's report on rankings made by hand: it says how far the chosen trial leads the
next, and says so plainly when the validation split is too small to tell them apart."""

from __future__ import annotations

from typing import Any

from stages.sweep import _report


def _result(means: list[float], n: int, groups: int | None = None) -> dict[str, Any]:
    trials = [
        {
            "trial": i,
            "values": {"train.epochs": i + 1},
            "mean": m,
            "sd": None,
            "per_seed": {"42": {"accuracy": m, "step": 10, "train_key": "k"}},
        }
        for i, m in enumerate(means)
    ]
    ranking = sorted(range(len(means)), key=lambda i: (-means[i], i))
    return {
        "trials": trials,
        "ranking": ranking,
        "chosen": trials[ranking[0]],
        "seeds": [42],
        "validation_questions": n,
        "validation_groups": groups or n,
    }


def test_a_one_question_lead_on_a_small_split_is_called_noise():
    md = _report(_result([12 / 41, 13 / 41], 41))  # ARC-Easy's sweep: 13 vs 12 of 41
    assert "leads trial 0 by 2.4 points (1.0 of 41 questions)" in md
    assert "cannot tell these trials apart" in md


def test_a_clear_lead_is_reported_without_the_warning():
    md = _report(_result([0.5, 0.9], 300))
    assert "leads trial 0 by 40.0 points" in md and "cannot tell" not in md


def test_one_trial_has_nothing_to_lead():
    md = _report(_result([0.5], 41))
    assert "leads" not in md and "Chosen: trial 0" in md


def test_questions_that_share_groups_are_counted_as_their_groups():
    # The bundled task's sweep at ae7e5b7: 83.3% vs 75.0% on 84 questions from 7 facts, a lead
    # outside the interval on 84 questions (±7.9) that the held-out seeds then reversed.
    assert "cannot tell" not in _report(_result([70 / 84, 63 / 84], 84))
    md = _report(_result([70 / 84, 63 / 84], 84, groups=7))
    assert "84 questions from 7 split groups" in md and "cannot tell these trials apart" in md
