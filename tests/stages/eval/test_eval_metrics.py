from __future__ import annotations

import itertools
import math
import random

import pytest

from stages.eval.metrics import (
    _lcs_length,
    mcnemar_exact,
    paired_mcnemar,
    similarity,
    summarize,
    wilson_interval,
)

# --- Wilson ---------------------------------------------------------------------------------------


def test_wilson_27_of_100_matches_hand_computation():
    # p = .27, z^2 = 3.8416, denom = 1.038416
    # center = (.27 + .019208) / denom = .2785091
    # half = 1.96 * sqrt(.27*.73/100 + 3.8416/40000) / denom = .0858139
    lo, hi = wilson_interval(27, 100)
    assert lo == pytest.approx(0.192695, abs=1e-5)
    assert hi == pytest.approx(0.364323, abs=1e-5)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.0 < hi < 0.35  # 0/10 -> (0, 0.2775)
    assert hi == pytest.approx(0.277533, abs=1e-5)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.277533, abs=1e-5)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_wilson_interval_holds_its_proportion_at_every_n():
    """At k = n = 300 the bound came out 0.9999999999999999, under the accuracy it bounds (a
    student that answered every held-out question), and the eval's plot stopped on it."""
    for n in range(1, 1001):
        for k in (0, n // 3, n):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi, (k, n, lo, hi)
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0


def test_wilson_contains_estimate_and_shrinks_with_n():
    for k, n in [(1, 3), (5, 12), (50, 100), (999, 1000)]:
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
    w_small = wilson_interval(5, 10)
    w_big = wilson_interval(500, 1000)
    assert w_big[1] - w_big[0] < w_small[1] - w_small[0]


# --- McNemar --------------------------------------------------------------------------------------


def test_mcnemar_exact_hand_checked_table():
    # 10 pairs: both right 3, both wrong 1, a right / b wrong 1 (b10), a wrong / b right 5 (b01).
    a = [True] * 3 + [False] * 1 + [True] * 1 + [False] * 5
    b = [True] * 3 + [False] * 1 + [False] * 1 + [True] * 5
    r = mcnemar_exact(a, b)
    assert (r["b01"], r["b10"], r["n"]) == (5, 1, 10)
    # discordant n = 6, min = 1: p = 2 * (C(6,0) + C(6,1)) / 2^6 = 2 * 7 / 64 = 0.21875
    assert r["p_value"] == pytest.approx(0.21875)


def test_mcnemar_exact_more_cases():
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0  # no discordance
    # all 8 discordant one way: p = 2 / 2^8
    r = mcnemar_exact([False] * 8, [True] * 8)
    assert r["p_value"] == pytest.approx(2 / 256)
    # balanced discordance caps at 1
    assert mcnemar_exact([True, False], [False, True])["p_value"] == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_mcnemar_matches_scipy_binomtest():
    stats = pytest.importorskip("scipy.stats")
    for b01, b10 in [(5, 1), (12, 4), (3, 9), (20, 20), (0, 7)]:
        a = [False] * b01 + [True] * b10
        b = [True] * b01 + [False] * b10
        ref = stats.binomtest(min(b01, b10), b01 + b10, 0.5).pvalue
        assert mcnemar_exact(a, b)["p_value"] == pytest.approx(ref)


# --- similarity ----------------------------------------------------------------------------------


def test_similarity_edges():
    assert similarity("3 + 4 = 7 . Answer: 7", "3 + 4 = 7 . Answer: 7") == 1.0
    assert similarity("a b c", "d e f") == 0.0
    assert similarity("", "") == 1.0
    assert similarity("", "a b") == 0.0
    assert similarity("a b", "") == 0.0
    assert similarity("A B", "a b") == 1.0  # case-insensitive


def test_similarity_rouge_l_value():
    # LCS("a b c d", "a c d e") = "a c d" = 3; P = R = 3/4; F1 = .75
    assert similarity("a b c d", "a c d e") == pytest.approx(0.75)
    # LCS = 2 of lengths 2 and 4: P = 1, R = .5 -> F1 = 2/3, symmetric
    assert similarity("a b", "a x b y") == pytest.approx(2 / 3)
    assert similarity("a x b y", "a b") == pytest.approx(2 / 3)


def test_similarity_caps_length():
    long = " ".join(str(i) for i in range(5000))
    assert similarity(long, long) == 1.0
    # beyond the cap the texts differ, but only the first 512 tokens count
    assert similarity(long + " x", long + " y") == 1.0


def _lcs_dp(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        assert _lcs_length(a, b) == _lcs_dp(a, b)
    for a, b in itertools.product(["", "a", "ab", "ba"], repeat=2):
        assert _lcs_length(list(a), list(b)) == _lcs_dp(a, b)


# --- summarize -----------------------------------------------------------------------------------


def _row(model, qid, pred, correct, text="", formatted=True, finish="stop", tokens=10):
    return {
        "model": model,
        "question_id": qid,
        "pred": pred,
        "correct": correct,
        "formatted": formatted,
        "completion": text,
        "finish_reason": finish,
        "usage": {"completion_tokens": tokens},
    }


def test_summarize_per_model():
    rows = [
        _row("teacher", "q1", "7", True, "3 + 4 = 7 Answer: 7"),
        _row("teacher", "q2", "5", True, "9 - 4 = 5 Answer: 5"),
        _row("teacher", "q3", "1", False, "Answer: 1", tokens=20),
        _row("teacher", "q4", None, False, "hmm", formatted=False, finish="length", tokens=30),
        _row("student", "q1", "7", True, "3 + 4 = 7 Answer: 7"),
        _row("student", "q2", "6", False, "blah", formatted=False),
        _row("student", "q3", "1", False, "Answer: 1"),
        _row("student", "q4", None, False, "hmm", formatted=False),
    ]
    m = summarize(rows)
    t, s = m["teacher"], m["student"]
    assert (t["n"], t["correct"], t["accuracy"]) == (4, 2, 0.5)
    assert (t["ci_low"], t["ci_high"]) == pytest.approx(wilson_interval(2, 4))
    assert t["format_rate"] == 0.75 and t["truncation_rate"] == 0.25
    assert t["answered_rate"] == 0.75
    assert t["mean_completion_tokens"] == pytest.approx(17.5)
    assert t["agreement"] is None and t["similarity"] is None
    assert s["accuracy"] == 0.25 and s["format_rate"] == 0.5
    # agrees on q1 and q3; q2 differs; q4 has no answer on either side -> disagreement
    assert s["agreement"] == 0.5
    assert s["similarity"] == pytest.approx((1 + 0 + 1 + 1) / 4)
    assert s["compared_with_reference"] == 4


def test_summarize_custom_same_answer_and_no_reference():
    rows = [_row("teacher", "q1", "7.0", True), _row("base", "q1", "7", True)]
    assert summarize(rows)["base"]["agreement"] == 0.0
    same = lambda a, b: float(a["pred"]) == float(b["pred"])  # noqa: E731
    assert summarize(rows, same_answer=same)["base"]["agreement"] == 1.0
    only = summarize([_row("base", "q1", "7", True)])
    assert only["base"]["agreement"] is None
    assert summarize([]) == {}


def test_paired_mcnemar_aligns_by_question():
    rows = [
        _row("student", "q1", "1", True),
        _row("student", "q2", "1", False),
        _row("student", "q3", "1", True),
        _row("base", "q3", "1", False),  # order differs
        _row("base", "q1", "1", False),
        _row("base", "q2", "1", False),
    ]
    r = paired_mcnemar(rows, "student", "base")
    assert (r["a"], r["b"], r["b01"], r["b10"], r["n"]) == ("student", "base", 0, 2, 3)
    assert r["p_value"] == pytest.approx(0.5)
    assert paired_mcnemar(rows, "student", "student_answer_only") is None
    assert math.isclose(paired_mcnemar(rows, "base", "student")["p_value"], 0.5)
