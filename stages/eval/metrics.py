"""Eval metrics as pure functions: scoring, Wilson intervals (from stages/shared/intervals.py),
exact McNemar, ROUGE-L, summaries.

No torch, no numpy: everything here runs on scored prediction rows (plain dicts), so it is cheap
to import and easy to test by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pipeline.answers import is_correct
from pipeline.reasoning import Convention
from stages.shared.intervals import wilson_interval
from stages.shared.verify import grade_row

TEACHER = "teacher"


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, Any]:
    """Exact two-sided McNemar test on paired outcomes (same questions, same order).

    b01 = a wrong and b right, b10 = a right and b wrong. Under H0 the discordant pairs split
    Binomial(b01 + b10, 1/2); the p-value doubles the smaller tail, capped at 1.
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(
            f"mcnemar_exact: paired lists differ in length ({len(a_correct)} vs {len(b_correct)})"
        )
    b01 = sum(1 for a, b in zip(a_correct, b_correct, strict=True) if not a and b)
    b10 = sum(1 for a, b in zip(a_correct, b_correct, strict=True) if a and not b)
    return {"b01": b01, "b10": b10, "n": len(a_correct), "p_value": sign_test(b01, b10)}


def sign_test(up: int, down: int) -> float:
    """Exact two-sided sign test: the chance of a split at least this uneven when each of the
    up + down discordant pairs goes either way at 1/2 (1.0 when there are none)."""
    n = up + down
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(up, down) + 1))
    return min(1.0, 2 * tail / 2**n)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """LCS length, bit-parallel (Hyyrö 2004): one big-int step per token of `b`."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def similarity(a: str, b: str, max_tokens: int = 512) -> float:
    """ROUGE-L F1 over lower-cased whitespace tokens (first `max_tokens` of each).

    Identical texts (two empty ones included) score 1, one empty text scores 0.
    """
    ta = a.lower().split()[:max_tokens]
    tb = b.lower().split()[:max_tokens]
    if not ta and not tb:
        return 1.0
    if not ta or not tb:
        return 0.0
    lcs = _lcs_length(ta, tb)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(tb), lcs / len(ta)
    return 2 * p * r / (p + r)


def _same_pred(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("pred") is not None and a.get("pred") == b.get("pred")


def summarize(
    predictions: Iterable[dict[str, Any]],
    *,
    reference: str = TEACHER,
    same_answer: Callable[[dict[str, Any], dict[str, Any]], bool] = _same_pred,
    z: float = 1.96,
) -> dict[str, dict[str, Any]]:
    """Metrics per model from scored prediction rows.

    A row has `model`, `question_id`, `completion`, `finish_reason`, `usage.completion_tokens`,
    and the scores `pred` (extracted answer or None), `correct` and `formatted` (bools).
    Every model other than `reference` also gets, on the questions both answered:
    `agreement` (share where `same_answer(row, reference_row)`; a missing answer disagrees) and
    `similarity` (mean ROUGE-L F1 of its text against the reference's text).
    """
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for row in predictions:
        by_model.setdefault(row["model"], {})[row["question_id"]] = row
    ref = by_model.get(reference, {})
    out: dict[str, dict[str, Any]] = {}
    for model, rows in by_model.items():
        n = len(rows)
        k = sum(bool(r.get("correct")) for r in rows.values())
        lo, hi = wilson_interval(k, n, z)
        tokens = [int((r.get("usage") or {}).get("completion_tokens", 0)) for r in rows.values()]
        m: dict[str, Any] = {
            "n": n,
            "correct": k,
            "accuracy": k / n if n else 0.0,
            "ci_low": lo,
            "ci_high": hi,
            "format_rate": sum(bool(r.get("formatted")) for r in rows.values()) / n if n else 0.0,
            "answered_rate": (
                sum(r.get("pred") is not None for r in rows.values()) / n if n else 0.0
            ),
            "truncation_rate": (
                sum(r.get("finish_reason") == "length" for r in rows.values()) / n if n else 0.0
            ),
            "mean_completion_tokens": sum(tokens) / n if n else 0.0,
            "agreement": None,
            "similarity": None,
        }
        m |= _trace_metrics(list(rows.values()))
        common = [q for q in rows if q in ref]
        if model != reference and common:
            m["agreement"] = sum(same_answer(rows[q], ref[q]) for q in common) / len(common)
            m["similarity"] = sum(
                similarity(rows[q].get("completion") or "", ref[q].get("completion") or "")
                for q in common
            ) / len(common)
            m["compared_with_reference"] = len(common)
        out[model] = m
    return out


def _trace_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """For a model that wrote traces: how often, how long, how often left open, and the length
    of the answer after them (whole completions where there was none). Nothing otherwise: its
    answer is its completion (mean_completion_tokens)."""
    traced = [r for r in rows if "reasoning_words" in r]
    if not traced:
        return {}
    n = len(rows)
    answers = [
        r["answer_words"] if "answer_words" in r else len(r["completion"].split()) for r in rows
    ]
    return {
        "trace_rate": len(traced) / n,
        "unclosed_trace_rate": sum(not r["reasoning_closed"] for r in traced) / n,
        "mean_reasoning_words": sum(r["reasoning_words"] for r in traced) / len(traced),
        "mean_answer_words": sum(answers) / n,
    }


def paired_mcnemar(
    predictions: Iterable[dict[str, Any]], model_a: str, model_b: str
) -> dict[str, Any] | None:
    """McNemar between two models on the questions both answered; None if either is absent."""
    a: dict[str, bool] = {}
    b: dict[str, bool] = {}
    for row in predictions:
        if row["model"] == model_a:
            a[row["question_id"]] = bool(row.get("correct"))
        elif row["model"] == model_b:
            b[row["question_id"]] = bool(row.get("correct"))
    common = sorted(set(a) & set(b))
    if not a or not b or not common:
        return None
    res = mcnemar_exact([a[q] for q in common], [b[q] for q in common])
    return {"a": model_a, "b": model_b, **res}


# --- scoring -------------------------------------------------------------------------------------


def score_rows(rows: list[dict[str, Any]], convention: Convention = Convention()) -> None:  # noqa: B008
    """Add pred / correct / formatted to each row from its text (always recomputed); the
    answer is read after a reasoning trace, never in it. A row with a trace also gets its
    trace's length in words and whether it closed."""
    for r in rows:
        g = grade_row(r, convention)
        part = g.part
        r["pred"], r["correct"], r["formatted"] = g.pred, g.correct, g.answer_line
        if part.reasoning is not None:  # without a trace the whole completion is the answer
            r["answer_words"] = len(part.answer.split())
            r["reasoning_words"] = len(part.reasoning.split())
            r["reasoning_closed"] = part.closed


def same_answer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two models gave the same final answer (checked like a gold answer, so 7 == 7.0)."""
    if a.get("pred") is None or b.get("pred") is None:
        return False
    return bool(is_correct(a["pred"], b["pred"], a["answer_type"], a.get("choices") or None))
