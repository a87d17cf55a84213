"""The filter's checks: each record check is a plain function `(record, ctx) -> Verdict`; set
checks (dedup) and selection look at all survivors at once. Checks run in the configured order and
a record stops at the first that rejects it, so every input ends in exactly one of kept or
rejected, with its reason."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.answers import extract_answer
from pipeline.config import Config, FilterConfig
from pipeline.prompts import render_messages
from pipeline.reasoning import TAGS, Convention, Mode, Split, inline_text
from pipeline.tasks import Question
from stages.shared import verify
from stages.shared.verify import Verdict

_WORD = re.compile(r"\w+", re.UNICODE)
_ANSWER_TAIL = re.compile(r"(?im)^[^\n]*\b(?:final\s+)?answer\s*(?:is|:)[^\n]*$")


@dataclass
class Context:
    """What the record checks read: the configuration, the questions, the eval set's n-grams,
    and the row being checked, split at its trace (`at`), with its text and words made once."""

    cfg: FilterConfig
    questions: dict[str, Question]
    eval_ngrams: dict[tuple[str, ...], str]
    eval_lengths: set[int] = field(default_factory=set)
    template: set[tuple[str, ...]] = field(default_factory=set)  # eval n-grams train shares
    template_only: int = 0  # samples whose only overlap was template text
    reasoning: Mode = "auto"
    tags: tuple[str, str] = TAGS
    part: Split = Split(None, "", True, "none")
    _text: str | None = None
    _words: list[str] | None = None

    def __post_init__(self) -> None:
        # an eval n-gram can only start at one of these words: the others are never looked up
        self.eval_first = {g[0] for g in self.eval_ngrams}

    def at(self, part: Split) -> Context:
        self.part, self._text, self._words = part, None, None
        return self

    def text(self, r: dict) -> str:
        """Sample `r`'s whole text, trace included: what repetition, dedup and decontamination
        see, as generate's copy check does."""
        if self._text is None:
            self._text = inline_text(self.part, self.tags)
        return self._text

    def words(self, r: dict) -> list[str]:
        if self._words is None:
            self._words = words(self.text(r))
        return self._words


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return set(_windows(tokens, n)) if n > 0 else set()


def _windows(tokens: list[str], n: int) -> Iterator[tuple[str, ...]]:
    """Every run of n consecutive tokens, in order (zip of shifted copies: no slice per run)."""
    return zip(*(tokens[j:] for j in range(n)), strict=False)  # shorter copies end it


def repeated_share(toks: list[str], n: int) -> float:
    """Share of word n-grams that repeat an earlier one: 0 for fresh text, near 1 for loops."""
    grams = list(_windows(toks[:20000], n))
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def trim_after_answer(text: str) -> str:
    """Cut what follows the last answer line: the student should learn to stop there."""
    ends = [m.end() for m in _ANSWER_TAIL.finditer(text)]
    return text[: ends[-1]].rstrip() if ends else text.rstrip()


# --- record checks -------------------------------------------------------------------------------


def check_truncated(r: dict, ctx: Context) -> Verdict:
    return verify.truncated(r, ctx.part, ctx.cfg.drop_truncated)


def check_format(r: dict, ctx: Context) -> Verdict:
    return verify.answer_format(r, ctx.part, ctx.reasoning)


def check_correct(r: dict, ctx: Context) -> Verdict:
    return verify.correct(r, ctx.part)


def check_length(r: dict, ctx: Context) -> Verdict:
    """The whole completion in tokens, then a trace and its answer apart, in words."""
    c = ctx.cfg
    n = int((r.get("usage") or {}).get("completion_tokens") or len(words(ctx.text(r))))
    s = ctx.part
    scores: dict[str, Any] = {"tokens": n}
    answer_words = len(words(s.answer) if s.reasoning is not None else ctx.words(r))
    # Part lengths are scored where they mean something: a sample with a trace, or bounds set.
    if s.reasoning is not None or c.min_answer_words or c.max_answer_words:
        scores["answer_words"] = answer_words
    if s.reasoning is not None:
        scores["reasoning_words"] = len(words(s.reasoning))
    bounds = (
        ("tokens", n, c.min_tokens, c.max_tokens, "too_short", "too_long"),
        (
            "reasoning",
            scores.get("reasoning_words", 0),
            c.min_reasoning_words,
            c.max_reasoning_words,
            "reasoning_too_short",
            "reasoning_too_long",
        ),
        (
            "answer",
            answer_words,
            c.min_answer_words,
            c.max_answer_words,
            "answer_too_short",
            "answer_too_long",
        ),
    )
    for _, value, lo, hi, short, long in bounds:
        if value < lo:
            return Verdict(False, short, scores)
        if hi and value > hi:
            return Verdict(False, long, scores)
    return Verdict(True, None, scores)


def check_repetition(r: dict, ctx: Context) -> Verdict:
    ratio = repeated_share(ctx.words(r), ctx.cfg.repetition_n)
    ok = ratio <= ctx.cfg.max_repetition
    return Verdict(ok, None if ok else "repetitive", {"repetition": round(ratio, 4)})


def check_decontaminate(r: dict, ctx: Context) -> Verdict:
    q = ctx.questions.get(r["question_id"])
    toks = (words(q.question) if q else []) + ctx.words(r)  # the words of question + "\n" + text
    hits = {
        g
        for i, w in enumerate(toks)
        if w in ctx.eval_first
        for n in ctx.eval_lengths
        if (g := tuple(toks[i : i + n])) in ctx.eval_ngrams
    }
    if not hits:
        if ctx.template and any(
            tuple(toks[i : i + n]) in ctx.template
            for i in range(len(toks))
            for n in ctx.eval_lengths
        ):
            ctx.template_only += 1  # counted for the report, never a drop
        return Verdict(True, None, {"contaminated": False})
    gram = min(hits)
    detail = {"match": " ".join(gram), "eval_question": ctx.eval_ngrams[gram]}
    return Verdict(False, "contaminated", {"contaminated": True}, detail)


RECORD_CHECKS: dict[str, Callable[[dict, Context], Verdict]] = {
    "truncated": check_truncated,
    "format": check_format,
    "correct": check_correct,
    "length": check_length,
    "repetition": check_repetition,
    "decontaminate": check_decontaminate,
}


# --- set checks and selection: stages/filter/passes.py runs them over the whole set -------------

# a set check's name -> the reason it rejects with
SET_CHECKS: dict[str, str] = {"exact_dedup": "exact_duplicate", "near_dedup": "near_duplicate"}


def score(s: dict[str, Any]) -> float:
    """Higher is better: correct first, then clean format, then less repetition, then shorter."""
    return (
        2.0 * bool(s.get("correct"))
        + 1.0 * bool(s.get("format"))
        - float(s.get("repetition", 0.0))
        - 0.001 * float(s.get("tokens", 0))
    )


@dataclass(frozen=True, slots=True)
class Candidate:
    """What selection reads of a sample: a few fields, not the sample."""

    index: int
    teacher: str
    score: float


def select(groups: Iterable[list[Candidate]], cfg: FilterConfig) -> dict[int, str]:
    """Indexes dropped by selection, with why; each group is one question's candidates, in
    order. A preferred teacher's samples, where a question has any, push out the others'; then
    best-of-n keeps the top scores, balanced takes each teacher's best in turn, and `all`
    applies only the cap."""
    dropped: dict[int, str] = {}
    for group in groups:
        if cfg.prefer_teacher and any(c.teacher == cfg.prefer_teacher for c in group):
            others = [c for c in group if c.teacher != cfg.prefer_teacher]
            dropped.update((c.index, "other_teacher_preferred") for c in others)
            group = [c for c in group if c.teacher == cfg.prefer_teacher]
        ranked = sorted(group, key=lambda c: -c.score)  # stable: ties keep order
        cut: list[Candidate] = []
        if cfg.selection == "best":
            cut = ranked[1:]
        elif cfg.selection == "balanced":
            n = cfg.per_question_cap or len({c.teacher for c in group})
            cut = _in_turn(ranked)[n:]
        elif cfg.per_question_cap:
            cut = group[cfg.per_question_cap :]
        dropped.update((c.index, "selection_cap") for c in cut)
    return dropped


def _in_turn(ranked: list[Candidate]) -> list[Candidate]:
    """Each teacher's best, then each one's second best, and so on."""
    by_t: dict[str, list[Candidate]] = defaultdict(list)
    for c in ranked:
        by_t[c.teacher].append(c)
    turns = max(len(v) for v in by_t.values())
    return [v[i] for i in range(turns) for v in by_t.values() if i < len(v)]


Grams = dict[tuple[str, ...], str]


def eval_ngrams(
    eval_qs: list[Question], cfg: FilterConfig, train_qs: Iterable[Question] = ()
) -> tuple[Grams, set[tuple[str, ...]]]:
    """The eval questions' word n-grams, each naming its question: what decontamination seeks;
    and, set apart from them, the task's template: those that filter.decontam_template train
    questions or more also hold (a question's template is shared by design, a leak is not)."""
    out: Grams = {}
    if "decontaminate" not in cfg.checks:
        return out, set()
    for q in eval_qs:
        toks = words(q.question)
        # A question shorter than n counts whole, so a verbatim leak is never missed.
        for g in ngrams(toks, min(cfg.decontam_n, len(toks))):
            out.setdefault(g, q.id)
    if not cfg.decontam_template or not out:
        return out, set()
    lengths = {len(g) for g in out}
    shared: Counter = Counter()
    for q in train_qs:  # each train question counts a gram once
        toks = words(q.question)
        shared.update({g for n in lengths for g in _windows(toks, n) if g in out})
    template = {g for g, c in shared.items() if c >= cfg.decontam_template}
    return {g: q for g, q in out.items() if g not in template}, template


def to_sft_row(r: dict, q: Question, s: dict, cfg: Config, part: Split | None = None) -> dict:
    """TRL conversational prompt-completion; the prompt is the student's zero-shot one.

    A sample with a trace is written with the trace in the teacher's tags before the answer
    (what TRL and a student without a think convention train on), and the two parts apart in
    `reasoning` and `final`, for a student whose chat template takes the trace in a field."""
    convention = Convention.of(cfg.lead_teacher())
    tags = convention.tags
    if part is None:
        part = convention.split(r)
    final = trim_after_answer(part.answer)
    text = inline_text(Split(part.reasoning, final, part.closed, part.source), tags)
    answer = s.get("answer") or extract_answer(part.answer)
    trace = {} if part.reasoning is None else {"reasoning": part.reasoning, "final": final}
    return {
        "prompt": render_messages(cfg.student_template, q),
        "completion": [{"role": "assistant", "content": text}],
        **trace,
        "answer": answer,
        "gold": r["gold"],
        "question_id": r["question_id"],
        "sample_id": r["id"],
        "teacher": r.get("teacher", ""),
        "scores": s,
        # the teacher's soft labels for this sample: a record in kept.logprobs.bin
        **({"logprobs": r["logprobs"]} if "logprobs" in r else {}),
    }
