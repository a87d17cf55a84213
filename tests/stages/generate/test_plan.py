"""`distill plan`'s arithmetic on hand-made pools (stages/generate/plan.py): which pilot samples
it asks for, the held samples counted exactly, the rest extrapolated at the pool's mean per
sample with two standard errors over questions, and the adaptive and cascade ranges. Asking a
real teacher for the pilot is tests/stages/generate/test_generate.py's."""

from __future__ import annotations

import math

from pipeline.budget import Budget, Calls, chain_lines
from pipeline.calls import Request
from pipeline.config import load_config
from pipeline.tasks import Question
from stages.generate.plan import estimate, pilot_questions, pilot_samples, plan_totals, render
from stages.generate.samples import Planned
from stages.generate.strategy import TeacherPlan

QUESTIONS = ["easy", "copies", "hard"]
RIGHT = "3 + 4 = 7.\nAnswer: 7"


def _plan(cfg, index: int = 0) -> TeacherPlan:
    samples = {
        q: [Planned(Request([f"{q}-{i}"], [], {}), Question(q, "3 + 4?", "7"), i) for i in range(6)]
        for q in QUESTIONS
    }
    return TeacherPlan(index, f"t{index}", cfg.teacher, "id", samples)


def _row(sid: str, completion: int, prompt: int = 5, text: str = RIGHT) -> dict:
    return {
        "id": sid,
        "question_id": sid.rsplit("-", 1)[0],
        "completion": text,
        "finish_reason": "stop",
        "gold": "7",
        "answer_type": "numeric",
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }


def _pool(*rows: dict) -> dict[str, dict]:
    return {r["id"]: r for r in rows}


def test_the_pilot_is_spread_through_the_questions() -> None:
    qs = [f"q{i}" for i in range(10)]
    assert pilot_questions(qs, 3) == ["q0", "q3", "q6"]
    assert pilot_questions(qs, 10) == qs and pilot_questions(qs, 50) == qs


def test_the_pilot_asks_only_the_first_round_the_pool_lacks() -> None:
    cfg = load_config(None, ["generate.n=2"])
    tp = _plan(cfg)
    have = _pool(_row("easy-0", 10))
    # pilot of 2 questions: easy and copies (spread), their samples 0 and 1, less the one held
    assert [p.request.id for p in pilot_samples(cfg, tp, QUESTIONS, have, 2)] == [
        "easy-1",
        "copies-0",
        "copies-1",
    ]
    # a sample past the plan's n does not count; one of a second question in it does
    have |= _pool(_row("hard-3", 10))
    assert len(pilot_samples(cfg, tp, QUESTIONS, have, 2)) == 3
    have |= _pool(_row("hard-1", 10))
    assert pilot_samples(cfg, tp, QUESTIONS, have, 2) == []
    assert pilot_samples(cfg, tp, QUESTIONS, have, 0) == []


def test_a_fixed_plan_counts_the_held_exactly_and_extrapolates_the_rest() -> None:
    """n=2 of 3 questions: 6 planned, 3 held (10 + 20 and 30 completion tokens, 5 prompt each,
    one wrong), so 3 to ask at the mean 20 per sample: 60 + 60; the question means are 15 and 30,
    two standard errors of their mean 2 * 7.5 per sample, 45 on the 3 to ask."""
    cfg = load_config(None, ["generate.n=2"])
    have = _pool(
        _row("easy-0", 10),
        _row("easy-1", 20, text="Answer: 8"),
        _row("copies-0", 30),
        _row("hard-5", 999),  # not in an n=2 plan: neither held nor the basis
    )
    e = estimate(cfg, _plan(cfg), QUESTIONS, have)
    assert e.samples == (6, 6) and e.held == (3, 3)
    assert e.completion == (120, 120) and e.prompt == (30, 30)
    assert math.isclose(e.completion_error[0], 45) and e.basis == 3 and e.basis_questions == 2
    assert math.isclose(e.verified_share, 2 / 3)
    text = render(cfg, [e], 3, 0)
    assert "6 samples, 3 in the pool, 3 to ask" in text
    assert "expected completion tokens 120 (+- 45 on those to ask), prompt tokens 30" in text


def test_adaptive_and_cascade_plans_give_their_best_and_worst_case() -> None:
    """Adaptive rounds of 2 until 1 verified, at most 6: at best one round per question (6
    samples), at worst 18; a cascade's second teacher from none to 18."""
    ov = [
        "generate.strategy=adaptive",
        "generate.n=2",
        "generate.target_verified=1",
        "generate.max_samples=6",
    ]
    cfg = load_config(None, ov)
    have = _pool(_row("easy-0", 10), _row("easy-1", 10))
    first = estimate(cfg, _plan(cfg), QUESTIONS, have)
    assert first.samples == (6, 18) and first.held == (2, 2)
    assert first.completion == (60, 180)
    later = estimate(cfg, _plan(cfg, index=1), QUESTIONS, have)
    assert later.samples == (0, 18) and later.completion == (0, 180)
    assert "6-18 samples, 2 in the pool, 4-16 to ask" in render(cfg, [first], 3, 0)


def test_the_plan_prices_itself_and_says_whether_the_budget_holds_it() -> None:
    ov = [
        "generate.n=2",
        "budget.completion_tokens=100",
        "budget.usd_per_million_completion=1000000",
    ]
    cfg = load_config(None, ov)
    have = _pool(_row("easy-0", 10, prompt=0), _row("easy-1", 30, prompt=0))
    e = estimate(cfg, _plan(cfg), QUESTIONS, have)
    assert e.completion == (120, 120)
    text = render(cfg, [e], 3, 4)
    assert "cost at budget's prices: $120.00" in text
    chain = chain_lines(cfg.budget, [], plan_totals([e]), None)
    assert "no later stage of the chain calls the teacher" in chain
    assert (
        "budget.completion_tokens 100: the whole chain (generate 120, later at most 0) stops at it"
        in chain
    )
    assert "the pilot asked 4 samples now" in text
    # a teacher with nothing in the pool has no estimate, and says how to get one
    none = render(cfg, [estimate(cfg, _plan(cfg), QUESTIONS, {})], 3, 0)
    assert "no estimate" in none and "--pilot" in none and "cost" not in none


def test_the_plan_sets_the_later_stages_calls_beside_generates_against_the_run_budget() -> None:
    """`distill plan` covers the chain: on-policy's scores and eval's teacher calls at most,
    added to generate's plan against each cap; the run's spend so far is said."""
    cfg = load_config(None, ["budget.completion_tokens=1000", "budget.prompt_tokens=50000"])
    later = [
        Calls("train: on-policy teacher scores", 40, 20000, 40),
        Calls("eval: teacher answers", 10, 2000, 640),
    ]
    spent = Budget(1000, 50000, completion=70, prompt=900)
    lines = chain_lines(cfg.budget, later, ((9000, 12000), (200, 400)), spent)
    assert lines[0] == (
        "train: on-policy teacher scores: at most 40 teacher calls, 20,000 prompt and 40 "
        "completion tokens"
    )
    assert "spent so far (pool and ledgers): 900 prompt and 70 completion tokens" in lines[2]
    # completion: 200-400 + 680 -> at most 1,080 > 1,000 but 200 fits: it may stop
    assert lines[3].endswith("(generate 200-400, later at most 680) may stop at it")
    assert lines[4].endswith("(generate 9,000-12,000, later at most 22,000) fits")


def test_expected_draws_are_the_hand_computed_ones() -> None:
    from stages.generate.expected import expected_draws

    assert expected_draws(1.0, 4, 2, 16) == (4.0, 0.0)  # the first round meets the target
    assert expected_draws(0.0, 4, 2, 16) == (16.0, 1.0)  # to the cap, never solved
    # rounds of 2, target 2, cap 4, p = 1/2: round 1 always (2 draws); it ends with 0, 1 or 2
    # counted at 1/4, 1/2, 1/4, so round 2 is drawn with 3/4 (1.5 draws); none counted in
    # either round: 1/4 * 1/4
    draws, none = expected_draws(0.5, 2, 2, 4)
    assert math.isclose(draws, 3.5) and math.isclose(none, 1 / 16)


def test_the_plan_expects_adaptive_draws_from_each_question_s_counted_rate() -> None:
    from stages.generate.expected import expected_draws

    cfg = load_config(
        None, ["generate.strategy=adaptive", "generate.n=2", "generate.max_samples=6"]
    )
    have = _pool(
        _row("easy-0", 10),
        _row("easy-1", 10, text="So seven.\nAnswer: 7"),  # two counted: rate (2 + .5) / 3
        _row("copies-0", 10),
        _row("copies-1", 10),  # a copy: one counted, rate (1 + .5) / 3
    )
    e = estimate(cfg, _plan(cfg), QUESTIONS, have)
    easy, copies = (expected_draws(r, 2, 2, 6) for r in (2.5 / 3, 1.5 / 3))
    mix = [(a + b) / 2 for a, b in zip(easy, copies, strict=True)]  # "hard": none held
    assert e.expected is not None and e.expected.basis_questions == 2
    assert math.isclose(e.expected.samples, easy[0] + copies[0] + mix[0])
    assert math.isclose(e.expected.unsolved, easy[1] + copies[1] + mix[1])
    text = render(cfg, [e], 3, 0)
    assert (
        f"likely: about {e.expected.samples:,.0f} samples ({e.expected.samples - 4:,.0f} to ask"
        in text
    )
    fixed = estimate(load_config(None, ["generate.n=2"]), _plan(cfg), QUESTIONS, have)
    assert fixed.expected is None and "likely" not in render(cfg, [fixed], 3, 0)
