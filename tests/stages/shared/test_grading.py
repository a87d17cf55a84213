"""One grader over rows (stages/shared/verify.py, grade_row): filter's `verified`, eval's
score, validation's accuracy and an on-policy round's stats all read the same `Graded`, so a
"verified" answer is the filter's in every stage (correct, not cut short, an answer line, a
trace where one is required) and "correct" is eval's accuracy."""

from __future__ import annotations

import pytest

from pipeline.reasoning import Convention
from pipeline.tasks import Question
from stages.eval.metrics import score_rows
from stages.shared.verify import answer_format, correct, gold_of, grade_row, truncated, verified

Q = Question("q1", "What is 3 + 4?", "7")
AUTO, REQUIRED = Convention(), Convention(mode="required")

CASES = [
    # (completion, finish_reason, convention, correct, answer_line, truncated, verified)
    ("3 + 4 = 7.\nAnswer: 7", "stop", AUTO, True, True, False, True),
    ("3 + 4 = 8.\nAnswer: 8", "stop", AUTO, False, True, False, False),
    ("3 + 4 = 7.\nAnswer: 7", "length", AUTO, True, True, True, False),
    ("so the total is \\boxed{7}", "stop", AUTO, True, False, False, False),
    ("Answer: 7", "stop", REQUIRED, True, True, False, False),
    ("<think>3 + 4 = 7</think>\nAnswer: 7", "stop", REQUIRED, True, True, False, True),
    ("<think>3 + 4 = 7 ... Answer: 7", "length", AUTO, False, False, True, False),
]


@pytest.mark.parametrize(("text", "finish", "conv", "ok", "line", "cut", "ver"), CASES)
def test_one_grade_holds_what_every_stage_reads(text, finish, conv, ok, line, cut, ver) -> None:
    row = {"completion": text, "finish_reason": finish, **gold_of(Q)}
    g = grade_row(row, conv)
    assert (g.correct, g.answer_line, g.truncated, g.verified) == (ok, line, cut, ver)
    # the filter's three checks, one by one, agree with the grade
    part = conv.split(row)
    three = (
        truncated(row, part).keep
        and answer_format(row, part, conv.mode).keep
        and correct(row, part).keep
    )
    assert verified(row, conv) == three == g.verified
    # eval's score is the grade's correct and answer line
    scored = [{**row}]
    score_rows(scored, conv)
    assert (scored[0]["correct"], scored[0]["formatted"], scored[0]["pred"]) == (ok, line, g.pred)


def test_gold_of_a_choice_question_carries_its_choices() -> None:
    q = Question("c", "Pick one", "B", answer_type="choice", choices=("red", "blue"))
    assert gold_of(q) == {"gold": "B", "answer_type": "choice", "choices": ["red", "blue"]}
    row = {"completion": "Answer: B", "finish_reason": "stop", **gold_of(q)}
    assert grade_row(row, AUTO).verified
