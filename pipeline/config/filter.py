"""The `filter:` section: which checks a sample must pass and which of the kept ones the
student learns from."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

from pipeline.fields import ConfigError, check_fields, knob

CheckName = Literal[
    "truncated",
    "format",
    "correct",
    "length",
    "repetition",
    "exact_dedup",
    "near_dedup",
    "decontaminate",
]


@dataclass(frozen=True)
class FilterConfig:
    checks: list[CheckName] = knob(
        factory=lambda: list(typing.get_args(CheckName)),  # all of them, in this order
        doc="checks in order; a record stops at the first that rejects it",
    )
    drop_truncated: bool = knob(True, doc="reject samples the teacher stopped at max_tokens")
    min_tokens: int = knob(1, doc="reject completions shorter than this (tokens)", ge=0)
    max_tokens: int = knob(4096, doc="reject completions longer than this (tokens)", ge=1)
    repetition_n: int = knob(3, doc="word n-gram size for the repeated n-gram ratio", ge=1)
    max_repetition: float = knob(0.5, doc="reject above this repeated n-gram ratio", ge=0, le=1)
    dedup_scope: Literal["question", "global"] = knob(
        "question", doc="question: duplicates among one question's samples; global: all samples"
    )
    near_threshold: float = knob(
        0.8, doc="MinHash Jaccard similarity above which samples are near duplicates", gt=0, lt=1
    )
    shingle: int = knob(5, doc="word shingle size for MinHash", ge=1)
    num_perm: int = knob(128, doc="MinHash permutations (more: slower, more exact)", ge=8)
    decontam_n: int = knob(
        13,
        doc="word n-gram size for eval-set overlap (shorter eval questions count whole)",
        ge=1,
    )
    decontam_template: int = knob(
        1,
        doc="an eval n-gram that this many train questions or more also hold is the task's "
        "template text, not a leak (1: any train question; the training prompts hold it "
        "anyway): it does not count as overlap. 0 = every n-gram counts (before issue 47)",
        ge=0,
    )
    selection: Literal["all", "best", "balanced"] = knob(
        "all",
        doc="all: every kept sample; best: the best-scored one per question (best-of-n); "
        "balanced: per question, each teacher's best in turn (up to per_question_cap, 0 = one "
        "per teacher)",
    )
    prefer_teacher: str = knob(
        "",
        doc="a teacher's label: where it has a sample that passed, a question keeps only its "
        "samples (its style), the others fill the questions it missed; '' = no preference",
        key_when_set=True,
    )
    min_pass_rate: float = knob(
        0.0,
        doc="drop the samples of questions whose pass rate (verified / sampled, all teachers) "
        "is below this (never-solved ones: any value > 0)",
        ge=0,
        le=1,
        key_when_set=True,
    )
    max_pass_rate: float = knob(
        1.0,
        doc="drop the samples of questions whose pass rate is above this (always-solved ones: "
        "any value < 1)",
        ge=0,
        le=1,
        key_when_set=True,
    )
    per_question_cap: int = knob(0, doc="max kept per question; 0 = no cap", ge=0)
    # Bounds on a reasoning sample's two parts (check `length`), in words: the server counts
    # a trace's tokens only when asked for one sample per call, words are exact for every sample.
    min_reasoning_words: int = knob(
        0, doc="reject a sample whose trace is shorter (words)", ge=0, key_when_set=True
    )
    max_reasoning_words: int = knob(
        0,
        doc="reject a sample whose trace is longer (words); 0 = no bound",
        ge=0,
        key_when_set=True,
    )
    min_answer_words: int = knob(
        0,
        doc="reject a sample whose answer after the trace is shorter (words)",
        ge=0,
        key_when_set=True,
    )
    max_answer_words: int = knob(
        0,
        doc="reject a sample whose answer after the trace is longer (words); 0 = no bound",
        ge=0,
        key_when_set=True,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        for part in ("reasoning", "answer"):
            lo, hi = getattr(self, f"min_{part}_words"), getattr(self, f"max_{part}_words")
            if hi and lo > hi:
                raise ConfigError(
                    f"{lo} is above filter.max_{part}_words ({hi})", f"min_{part}_words"
                )
        if len(set(self.checks)) != len(self.checks):
            raise ConfigError("a check is listed twice", "checks")
        if self.min_pass_rate > self.max_pass_rate:
            raise ConfigError(
                f"{self.min_pass_rate} is above filter.max_pass_rate ({self.max_pass_rate})",
                "min_pass_rate",
            )
        if self.min_tokens > self.max_tokens:
            raise ConfigError(
                f"{self.min_tokens} is above filter.max_tokens ({self.max_tokens})", "min_tokens"
            )
