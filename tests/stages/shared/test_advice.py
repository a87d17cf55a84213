"""stages/shared/advice.py: a suggestion only where a figure crosses its stated threshold,
naming the knob, its value now and the figure; at most three; the dataset card ends with them."""

from __future__ import annotations

from pipeline.config import load_config
from stages.shared.advice import filter_advice, generate_advice, train_advice
from stages.shared.cards import dataset_card, parse

CFG = load_config(None, ["generate.sampling.temperature=0.3", "generate.n=2"])


def _report(copies: int = 0, never: int = 0, cut: int = 0) -> dict:
    return {
        "input": 100,
        "reasons": {"exact_duplicate": copies, "wrong_answer": 10},
        "questions_total": 50,
        "pass_rate": {"never_solved": never},
        "truncated_seen": cut,
    }


def test_the_numbers_of_a_templated_task_get_their_three_suggestions() -> None:
    got = filter_advice(CFG, _report(copies=28, never=11, cut=12))
    assert len(got) == 3
    assert got[0].startswith("28% of the samples copied another of their question")
    assert "generate.sampling.temperature (0.3)" in got[0]
    assert "generate.strategy=adaptive" in got[0]
    assert got[1].startswith("11 of 50 questions were never solved") and "generate.n, 2" in got[1]
    assert got[2].startswith("12% of the samples were cut at generate.sampling.max_tokens")


def test_numbers_under_the_thresholds_say_nothing() -> None:
    assert filter_advice(CFG, _report(copies=19, never=9, cut=9)) == []
    assert generate_advice(CFG, 0.099) == [] and len(generate_advice(CFG, 0.1)) == 1


def test_more_epochs_only_for_a_student_improving_at_its_last_validation() -> None:
    def v(*accs: float) -> list[dict]:
        return [{"step": i, "accuracy": a} for i, a in enumerate(accs)]

    (one,) = train_advice(CFG, v(0.5, 0.6))
    assert "(50.0% -> 60.0%)" in one and "train.epochs, 2 now" in one
    assert train_advice(CFG, v(0.6, 0.5)) == []  # fell back: the best epoch was kept
    assert train_advice(CFG, v(0.7, 0.5, 0.6)) == []  # rising, but under an earlier best
    assert train_advice(CFG, v(0.5)) == []
    steps = load_config(None, ["train.max_steps=40"])
    assert train_advice(steps, v(0.5, 0.6)) == []  # a step count, not epochs, was asked
    # a rise within what the validation split resolves is no reason: 92.9% -> 95.2% on the
    # bundled task's 84 questions from 7 facts; the same rise on 400 questions is not either,
    # 50% -> 60% on 400 is
    assert train_advice(CFG, v(0.929, 0.952), units=7) == []
    assert train_advice(CFG, v(0.929, 0.952), units=400) == []
    assert len(train_advice(CFG, v(0.5, 0.6), units=400)) == 1


def test_the_dataset_card_ends_with_the_advice() -> None:
    report = {**_report(), "kept": 3, "advice": ["raise this (1 now)"]}
    sizes = {"train": 9, "validation": 2, "eval": 3}
    _, body = parse(
        dataset_card(CFG, report, [1], {}, {"generate": "g", "filter": "f"}, sizes, {}, "ab" * 32)
    )
    assert body.rstrip().endswith("## Advice\n\n- raise this (1 now)")
    _, plain = parse(
        dataset_card(
            CFG, _report(), [1], {}, {"generate": "g", "filter": "f"}, sizes, {}, "ab" * 32
        )
    )
    assert "## Advice" not in plain
