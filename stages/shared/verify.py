"""Is a sample verified? The filter's answer checks, shared with generate's adaptive sampling.

A sample is verified when its trace (if any) closed, the teacher did not stop it at max_tokens,
it has an answer line after the trace, and that answer matches the question's gold answer by the
task's checker (pipeline.answers; no model). filter runs the three checks one by one under the
names `truncated`, `format` and `correct`; generate's adaptive strategy and the pass rates ask
`verified`, which is the three in a row, so a question's stopping rule and its pass rate mean
what the filter means.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from pipeline.answers import grade, has_answer_line
from pipeline.reasoning import Convention, Mode, Split
from pipeline.tasks import Question

# Punctuation goes, but math operators stay: "a + b" and "a - b" are different completions.
_PUNCT = re.compile(r"[^\w\s+\-*/=<>^%|]")
# Same mapping for ASCII text via str.translate, which is ~2x faster than the regex.
_ASCII_PUNCT = str.maketrans({chr(c): " " for c in range(128) if _PUNCT.match(chr(c))})


def normalize_text(s: str) -> str:
    """Lowercase, drop punctuation (keeping math operators), collapse whitespace: two texts
    equal after this are exact duplicates (filter's exact_dedup)."""
    s = s.lower()
    s = s.translate(_ASCII_PUNCT) if s.isascii() else _PUNCT.sub(" ", s)
    return " ".join(s.split())


def shingles(text: str, k: int) -> list[str]:
    """Word k-grams of the normalized text; a text shorter than k is one shingle of all its
    words, an empty text has none."""
    words = normalize_text(text).split()
    if len(words) <= k:
        return [" ".join(words)] if words else []
    return list(map(" ".join, zip(*(words[j:] for j in range(k)), strict=False)))


def text_digest(text: str) -> bytes:
    return hashlib.blake2b(
        normalize_text(text).encode("utf-8", "surrogatepass"), digest_size=16
    ).digest()


@dataclass(frozen=True)
class Verdict:
    keep: bool
    reason: str | None = None  # why not, when not kept
    scores: dict[str, Any] = field(default_factory=dict)  # what the check measured
    detail: dict[str, Any] = field(default_factory=dict)  # written beside a rejected record


def truncated(r: dict, part: Split, drop_truncated: bool = True) -> Verdict:
    if part.truncated:  # no answer can follow, whatever finish_reason says
        return Verdict(False, "truncated_reasoning", {"truncated": True})
    cut = r.get("finish_reason") == "length"
    if cut and drop_truncated:
        return Verdict(False, "truncated", {"truncated": True})
    return Verdict(True, None, {"truncated": cut})


def answer_format(r: dict, part: Split, mode: Mode = "auto") -> Verdict:
    if mode == "required" and part.reasoning is None:
        return Verdict(False, "no_reasoning", {"format": False})
    ok = has_answer_line(part.answer)
    return Verdict(ok, None if ok else "no_answer_line", {"format": ok})


def correct(r: dict, part: Split) -> Verdict:
    pred, ok = grade(part.answer, r["gold"], r.get("answer_type", "numeric"), r.get("choices"))
    scores = {"correct": ok, "answer": pred}
    if pred is None:
        return Verdict(False, "no_answer", scores)
    return Verdict(ok, None if ok else "wrong_answer", scores)


@dataclass(frozen=True)
class Graded:
    """One answer graded: what every stage that grades reads (filter's pass rates, eval's
    scores, validation's accuracy, an on-policy round's stats), so they mean the same thing."""

    pred: str | None  # the final answer read from the answer part
    correct: bool  # it matches the gold answer (eval's and validation's accuracy)
    answer_line: bool  # the answer part has an answer line (eval's "in format")
    truncated: bool  # cut at max_tokens, or its trace never closed
    trace_missing: bool  # the convention requires a trace and there is none
    part: Split = field(repr=False, compare=False)  # the completion split at its trace

    @property
    def verified(self) -> bool:
        """The filter's `truncated`, `format` and `correct` checks all pass."""
        return not self.truncated and self.answer_line and not self.trace_missing and self.correct


def gold_of(q: Question) -> dict[str, Any]:
    """A question's gold fields, as a sample row carries them."""
    return {"gold": q.answer, "answer_type": q.answer_type, "choices": list(q.choices)}


def grade_row(r: dict, convention: Convention, part: Split | None = None) -> Graded:
    """Grade a row holding a completion (and its `finish_reason`, `reasoning`) and its gold
    fields (`gold`, `answer_type`, `choices`; `gold_of` gives a question's). `part`: the row
    split by `convention`, where the caller has it."""
    if part is None:
        part = convention.split(r)
    pred, ok = grade(part.answer, r["gold"], r.get("answer_type", "numeric"), r.get("choices"))
    return Graded(
        pred=pred,
        correct=ok,
        answer_line=bool(has_answer_line(part.answer)),
        truncated=part.truncated or r.get("finish_reason") == "length",
        trace_missing=convention.mode == "required" and part.reasoning is None,
        part=part,
    )


def verified(r: dict, convention: Convention) -> bool:
    """The filter's `truncated`, `format` and `correct` checks all pass."""
    return grade_row(r, convention).verified
