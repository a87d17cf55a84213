"""Final-answer extraction and checking: a table of tricky cases plus a robustness fuzz."""

from __future__ import annotations

import random
import time

import pytest

from pipeline.answers import extract_answer, has_answer_line, is_correct, normalize_numeric

CHOICES = ["Paris", "London", "Berlin", "Madrid"]

# (completion, gold, answer_type, expected verdict of is_correct(extract_answer(...), gold))
CASES: list[tuple[str, str, str, bool]] = [
    # numeric: separators, decimals, fractions, signs, units
    ("So we get 1000.\nAnswer: 1,000", "1000", "numeric", True),
    ("Answer: 1000", "1,000", "numeric", True),
    ("Answer: 1,000,000", "1000000", "numeric", True),
    ("Answer: 1,00", "100", "numeric", False),
    ("Answer: 0.5", "1/2", "numeric", True),
    ("Answer: .5", "0.5", "numeric", True),
    ("Answer: 2/4", "0.5", "numeric", True),
    ("Answer: \\frac{1}{2}", "0.5", "numeric", True),
    ("Answer: $\\dfrac{3}{4}$", "0.75", "numeric", True),
    ("Answer: -\\frac{1}{2}", "-0.5", "numeric", True),
    ("Answer: \u22123", "-3", "numeric", True),
    ("Answer: -3", "3", "numeric", False),
    ("Answer: 7 apples.", "7", "numeric", True),
    ("Answer: $12.50", "12.5", "numeric", True),
    ("Answer: 25%", "25", "numeric", True),
    ("Answer: 5 cm^2", "5", "numeric", True),
    ("Answer: x = 5", "5", "numeric", True),
    ("Answer: 3 or 4", "3", "numeric", False),
    ("Answer: 1e3", "1000", "numeric", True),
    ("Answer: 0.333", "1/3", "numeric", False),
    ("Answer: 10.0", "10", "numeric", True),
    ("Answer: 007", "7", "numeric", True),
    ("Answer: 1/0", "0", "numeric", False),
    # \boxed{}: fallback, nesting, and which one wins
    ("Thus the total is \\boxed{42}.", "42", "numeric", True),
    ("First \\boxed{41} then corrected: \\boxed{42}", "42", "numeric", True),
    ("\\boxed{\\frac{1}{2}}", "0.5", "numeric", True),
    ("\\boxed{\\text{7 apples}}", "7", "numeric", True),
    ("So \\boxed{\\sqrt{2}}", "\\sqrt{2}", "numeric", True),
    ("Answer: 12\nlater a stray \\boxed{13}", "12", "numeric", True),
    ("Unbalanced \\boxed{42", "42", "numeric", False),
    ("Final Answer:\n\\[\n\\boxed{9}\n\\]", "9", "numeric", True),
    # several answer lines: the last one wins
    ("Answer: 5\nWait, that is wrong.\nAnswer: 6", "6", "numeric", True),
    ("Answer: 5\nWait, that is wrong.\nAnswer: 6", "5", "numeric", False),
    ("**Final Answer:** 8", "8", "numeric", True),
    ("**Final Answer**: 8", "8", "numeric", True),
    ("The answer is 42. Because 6 times 7 is 42.", "42", "numeric", True),
    ("the final answer is: $3.5$", "7/2", "numeric", True),
    ("ANSWER: 11", "11", "numeric", True),
    ("The answer is not obvious yet.\nSo \\boxed{4}", "4", "numeric", True),
    # huge numbers and garbage
    ("Answer: " + "9" * 5000, "9" * 5000, "numeric", True),
    ("Answer: " + "9" * 5000, "9" * 4999, "numeric", False),
    ("Answer: " + "1" * 200, "1" * 200, "numeric", True),
    ("Answer: 1e999999999", "1", "numeric", False),
    ("Answer: $2^{2^{100}}$", "5", "numeric", False),
    ("Answer: $9^9^9$", "5", "numeric", False),
    ("Answer: $\\Gamma(10^{7})$", "5", "numeric", False),
    ("Answer: $2^{10}$", "1024", "numeric", True),
    ("", "7", "numeric", False),
    ("no answer here at all", "7", "numeric", False),
    ("Answer: banana", "7", "numeric", False),
    ("Answer: \\frac{1}{0}", "0", "numeric", False),
    # choice
    ("Answer: B", "B", "choice", True),
    ("Answer: (B)", "B", "choice", True),
    ("Answer: B)", "B", "choice", True),
    ("Answer: b.", "B", "choice", True),
    ("Answer: Option B", "B", "choice", True),
    ("Answer: (C) Berlin", "C", "choice", True),
    ("The answer is \\boxed{D}", "D", "choice", True),
    ("Answer: A", "B", "choice", False),
    ("Answer: London", "B", "choice", True),  # choice text, with CHOICES
    ("Answer: london.", "B", "choice", True),
    ("Answer: Rome", "B", "choice", False),
    ("Answer: A cat sat on the mat today", "A", "choice", False),
    # exact
    ("Answer:   New   York  City", "new york city", "exact", True),
    ("Answer: New York.", "new york", "exact", True),
    ("Answer: \\text{yes}", "Yes", "exact", True),
    ("Answer: no", "yes", "exact", False),
    ("Answer:", "yes", "exact", False),
]


@pytest.mark.parametrize(("text", "gold", "kind", "expected"), CASES)
def test_verdicts(text: str, gold: str, kind: str, expected: bool) -> None:
    pred = extract_answer(text)
    choices = CHOICES if kind == "choice" else None
    assert is_correct(pred, gold, kind, choices=choices) is expected, pred


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: 1\nAnswer: 2", "2"),
        ("The answer is 42.", "42"),
        ("x \\boxed{a{b{c}}d} y", "a{b{c}}d"),
        ("\\boxed 7", "7"),
        ("Answer: $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"),
        ("", None),
        ("nothing", None),
        ("Let me check the answer again.", None),
        ("{" * 10000, None),
    ],
)
def test_extract(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("s", "expected"),
    [
        ("1,000", "1000"),
        ("0.5", "1/2"),
        ("\\frac{1}{2}", "1/2"),
        ("\\frac12", "1/2"),
        ("\u22123", "-3"),
        ("7 apples.", "7"),
        ("\\boxed{7}", "7"),
        ("$1{,}234$", "1234"),
        ("-0", "0"),
        ("abc", None),
        ("", None),
        ("1.2.3", None),
    ],
)
def test_normalize_numeric(s: str, expected: str | None) -> None:
    assert normalize_numeric(s) == expected


def test_has_answer_line() -> None:
    assert has_answer_line("work...\nAnswer: 3")
    assert has_answer_line("The answer is 3.")
    assert has_answer_line("The answer is $\\boxed{3}$.")
    assert not has_answer_line("work... \\boxed{3}")
    assert not has_answer_line("Answer:\n\n")
    assert not has_answer_line("")


def test_unknown_answer_type_is_a_config_error() -> None:
    with pytest.raises(ValueError):
        is_correct("1", "1", "numerc")


def _fuzz_inputs(rng: random.Random) -> list[str]:
    alphabet = "0123456789{}\\$^!*/.,-+ ()[]abcxyzAB\n:=%\u2212\u00e9\u4e2d\U0001f600"
    inputs = [
        "",
        "{" * 10000,
        "}" * 10000 + "{" * 10000,
        "\\boxed{" * 5000,
        "\\boxed{" + "{" * 10000 + "}" * 9999,
        "Answer: " + "{" * 10000,
        "Answer: " + "1" * 1_000_000,
        "Answer: " + " " * 1_000_000,
        "answer " * 150_000,
        "The answer is " + "9," * 300_000,
        "\\boxed{1}" * 100_000,
        "Answer: 1e" + "9" * 5000,
        "Answer: $9^{9^{9^{9}}}$",
        "Answer: $100!$",
        "Answer: \\binom{100000}{50000}",
        bytes(range(256)).decode("latin-1") * 4000,
        rng.randbytes(1_000_000).decode("utf-8", errors="replace"),
        rng.randbytes(200_000).decode("utf-16", errors="replace"),
    ]
    for _ in range(100):
        n = rng.choice([1, 5, 20, 100, 2000])
        inputs.append("".join(rng.choice(alphabet) for _ in range(n)))
        inputs.append("Answer: " + inputs[-1])
    return inputs


def test_fuzz_never_raises_and_is_fast() -> None:
    rng = random.Random(1234)
    golds = ["1/2", "\\sqrt{2}", "B", "9" * 5000]
    start = time.perf_counter()
    for text in _fuzz_inputs(rng):
        t0 = time.perf_counter()
        assert isinstance(has_answer_line(text), bool)
        for kind in ("numeric", "choice", "exact"):
            pred = extract_answer(text)
            assert pred is None or isinstance(pred, str)
            for gold in golds:
                assert isinstance(is_correct(pred, gold, kind, choices=CHOICES), bool)
                assert isinstance(is_correct(text[:5000], gold, kind), bool)
        normalize_numeric(text)
        assert time.perf_counter() - t0 < 5.0, text[:80]
    assert time.perf_counter() - start < 20.0


def test_math_verify_fallback_works_off_the_main_thread() -> None:
    # math_verify's SIGALRM timeouts fail off the main thread; we must disable them there.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        got = list(
            pool.map(
                lambda pg: is_correct(pg[0], pg[1], "numeric"),
                [("\\sqrt{2}", "\\sqrt2"), ("\\pi/2", "\\frac{\\pi}{2}"), ("\\sqrt{3}", "2")],
            )
        )
    assert got == [True, True, False]
