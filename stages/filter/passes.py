"""filter's passes over the samples, in bounded memory: what it holds per sample is its id, its
question and teacher, a score and its checks' outcome as a few bytes, never its text.

Pass one reads every sample once: it grades it (the pass rates), runs the record checks in the
configured order up to the first that rejects it, and keeps the digest exact dedup compares.
Then, in the configured order, the pass-rate bounds, each record check's rejections and each set
check are applied to the samples still in (near dedup reads the samples once more, holding only
the MinHashes of those it keeps), and selection ranks each question's survivors. Pass two
(`outcomes`) reads the samples again and hands each over with its fate. A sample's fate is what
running the checks one after another over lists would make it: the first check in the order
that rejects it decides, and its scores are those of the checks it went through.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import FilterConfig
from pipeline.reasoning import Convention
from pipeline.records import DataError
from pipeline.tasks import Question
from stages.filter.checks import (
    RECORD_CHECKS,
    SET_CHECKS,
    Candidate,
    Context,
    eval_ngrams,
    score,
    select,
)
from stages.filter.dedup import first_of
from stages.shared.verify import grade_row, text_digest

Source = Callable[[], Iterable[dict]]  # the samples, read afresh at each call
BOUNDS = 0  # fate positions: 0 the pass-rate bounds, 1.. each check in order, then selection


@dataclass
class Decided:
    """What the passes decided, one entry per sample in input order."""

    checks: list[str]
    ids: list[str] = field(default_factory=list)
    question: list[str] = field(default_factory=list)
    teacher: list[str] = field(default_factory=list)
    # JSON of [position of the record check that rejected it or null, reason, detail,
    # [[position, scores], ...]]: the outcome of its record checks
    outcome: list[bytes] = field(default_factory=list)
    score: array = field(default_factory=lambda: array("d"))
    digest: list[bytes | None] = field(default_factory=list)  # exact dedup's, when it runs
    fate: array = field(default_factory=lambda: array("i"))  # position that rejected it
    duplicate_of: dict[int, int] = field(default_factory=dict)
    selected_out: dict[int, str] = field(default_factory=dict)  # selection's drops, with why
    # question -> [teacher no., verified, sampled, ...] in the order its teachers came, as
    # stages/shared/verify.py verifies (flat: a dict per question is 180 bytes more)
    counts: dict[str, list[int]] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)  # teacher -> its no. in counts
    traces: Counter = field(default_factory=Counter)  # with_trace, unclosed, source:<where>
    identities: dict[str, str] = field(default_factory=dict)  # teacher -> identity
    # decontamination's template: eval n-grams set aside, samples whose only overlap they were
    template: dict[str, int] = field(default_factory=dict)
    low: float = 0.0  # filter.min_pass_rate: below it too_hard, above the upper bound too_easy

    @property
    def selection(self) -> int:
        return len(self.checks) + 1

    @property
    def kept(self) -> int:
        return len(self.checks) + 2

    def overall_of(self, question: str) -> float:
        """A question's pass rate over all teachers."""
        c = self.counts[question]
        return rate(sum(c[1::3]), sum(c[2::3]))

    def by_teacher(self, question: str) -> dict[str, list[int]]:
        """teacher -> [verified, sampled] for one question."""
        c, names = self.counts[question], self.teachers
        return {names[c[k]]: [c[k + 1], c[k + 2]] for k in range(0, len(c), 3)}

    @property
    def teachers(self) -> list[str]:
        return list(self.numbers)  # in the order they first came

    def count(self, question: str, teacher: str, verified: bool) -> None:
        c = self.counts.setdefault(question, [])
        no = self.numbers.setdefault(teacher, len(self.numbers))
        k = next((k for k in range(0, len(c), 3) if c[k] == no), None)
        if k is None:
            k = len(c)
            c += [no, 0, 0]
        c[k + 1] += verified
        c[k + 2] += 1


def rate(good: int, sampled: int) -> float:
    return round(good / sampled, 4) if sampled else 0.0


def decide(
    source: Source,
    cfg: FilterConfig,
    questions: dict[str, Question],
    eval_qs: list[Question],
    reasoning: Convention,
    *,
    bounds: bool,
) -> Decided:
    """Every sample's fate (see the module's doc); with `bounds`, the pass-rate bounds first."""
    grams, template = eval_ngrams(eval_qs, cfg, questions.values())
    lengths = {len(g) for g in grams} | {len(g) for g in template}
    ctx = Context(
        cfg,
        questions,
        grams,
        lengths,
        template=template,
        reasoning=reasoning.mode,
        tags=reasoning.tags,
    )
    d = Decided(list(cfg.checks), low=cfg.min_pass_rate)
    _first_pass(source, ctx, reasoning, d)
    d.template = {"ngrams": len(template), "samples": ctx.template_only}
    if bounds and (cfg.min_pass_rate > 0 or cfg.max_pass_rate < 1):
        for i, q in enumerate(d.question):
            if not cfg.min_pass_rate <= d.overall_of(q) <= cfg.max_pass_rate:
                d.fate[i] = BOUNDS
    for pos, check in enumerate(d.checks, 1):
        if check == "exact_dedup":
            _exact_dedup(d, pos, cfg)
        elif check == "near_dedup":
            _near_dedup(source, ctx, reasoning, d, pos)
    if cfg.selection == "all" and not cfg.prefer_teacher:  # only the cap: no group is held
        d.selected_out = _capped(d, cfg.per_question_cap)
    else:
        groups: dict[str, list[Candidate]] = {}
        for i in _alive(d, d.selection):
            groups.setdefault(d.question[i], []).append(Candidate(i, d.teacher[i], d.score[i]))
        d.selected_out = select(groups.values(), cfg)
    for i in d.selected_out:
        d.fate[i] = d.selection
    return d


def _exact_dedup(d: Decided, pos: int, cfg: FilterConfig) -> None:
    first: dict[tuple[str, bytes], int] = {}  # one digest per kept sample, freed on return
    for i in _alive(d, pos):
        j = first_of(first, (_scope(d, i, cfg), d.digest[i]), i)
        if j is not None:
            d.fate[i], d.duplicate_of[i] = pos, j
    d.digest.clear()  # its work is done: the passes after it need no digest


def _capped(d: Decided, cap: int) -> dict[int, str]:
    """`select` with selection `all` and no preferred teacher: each question's first `cap`."""
    if not cap:
        return {}
    seen: Counter = Counter()
    out = {}
    for i in _alive(d, d.selection):
        seen[d.question[i]] += 1
        if seen[d.question[i]] > cap:
            out[i] = "selection_cap"
    return out


def _first_pass(source: Source, ctx: Context, reasoning: Convention, d: Decided) -> None:
    """Grade every sample, run its record checks, and note what the set checks need."""
    exact = d.checks.index("exact_dedup") + 1 if "exact_dedup" in d.checks else None
    names: dict[str, str] = {}  # one string per question id and teacher, shared by the lists
    for r in source():
        part = reasoning.split(r)
        ctx.at(part)
        q, t = r["question_id"], r.get("teacher", "")
        d.identities.setdefault(t, r.get("teacher_identity", "?"))
        d.count(q, t, grade_row(r, reasoning, part).verified)
        d.traces.update(
            with_trace=int(part.reasoning is not None),
            unclosed=int(part.truncated),
            **{"source:" + part.source: 1},
        )
        failed, reason, detail, steps, scores = None, None, {}, [], {}
        for pos, check in enumerate(d.checks, 1):
            if check in RECORD_CHECKS:
                v = RECORD_CHECKS[check](r, ctx)
                steps.append([pos, v.scores])
                scores.update(v.scores)
                if not v.keep:
                    failed, reason, detail = pos, v.reason or check, v.detail
                    break
        d.ids.append(r["id"])
        d.question.append(names.setdefault(q, q))
        d.teacher.append(names.setdefault(t, t))
        d.outcome.append(
            json.dumps([failed, reason, detail, steps], separators=(",", ":")).encode()
        )
        d.score.append(score(scores))
        reaches = exact is not None and (failed is None or failed > exact)
        d.digest.append(text_digest(ctx.text(r)) if reaches else None)
        d.fate.append(d.kept if failed is None else failed)


def _alive(d: Decided, pos: int) -> Iterator[int]:
    """The samples no check before position `pos` rejected, in order."""
    return (i for i, f in enumerate(d.fate) if f > pos)


def _scope(d: Decided, i: int, cfg: FilterConfig) -> str:
    return d.question[i] if cfg.dedup_scope == "question" else "*"


def _near_dedup(source: Source, ctx: Context, reasoning: Convention, d: Decided, pos: int) -> None:
    from stages.filter.dedup import NearIndex

    c = ctx.cfg
    index = NearIndex(threshold=c.near_threshold, shingle=c.shingle, num_perm=c.num_perm)
    for i, r in enumerate(source()):
        if d.fate[i] > pos:
            _same(d, i, r)
            j = index.seen(_scope(d, i, c), i, ctx.at(reasoning.split(r)).text(r))
            if j is not None:
                d.fate[i], d.duplicate_of[i] = pos, j


def _same(d: Decided, i: int, r: dict) -> None:
    if i >= len(d.ids) or r["id"] != d.ids[i]:
        raise DataError(
            f"sample {i + 1} ({r['id']}) is not the one filter read there before: the samples "
            "changed while filter read them; rerun filter"
        )


@dataclass(frozen=True)
class Outcome:
    """One sample's fate: kept (`reason` None) or rejected with why and the detail."""

    row: dict
    reason: str | None
    scores: dict[str, Any]
    detail: dict[str, Any]

    def rejected(self) -> dict[str, Any]:
        """The sample as rejected.jsonl holds it."""
        return {**self.row, "reason": self.reason, "scores": self.scores, **self.detail}


def outcomes(source: Source, d: Decided) -> Iterator[Outcome]:
    """Pass two: every sample, in input order, with its fate."""
    n = 0
    for i, r in enumerate(source()):
        _same(d, i, r)
        n += 1
        fate = d.fate[i]
        if fate == BOUNDS:
            p = d.overall_of(d.question[i])
            yield Outcome(r, "too_hard" if p < d.low else "too_easy", {}, {"pass_rate": p})
            continue
        failed, reason, detail, steps = json.loads(d.outcome[i])
        scores: dict[str, Any] = {}
        for pos, s in steps:
            if pos <= fate:  # the checks it went through, the one that rejected it included
                scores.update(s)
        if fate >= d.selection:
            scores["score"] = round(score(scores), 4)
        if fate == d.kept:
            yield Outcome(r, None, scores, {})
        elif fate == d.selection:
            yield Outcome(r, d.selected_out[i], scores, {})
        elif fate == failed:
            yield Outcome(r, reason, scores, detail)
        else:
            dup = {"duplicate_of": d.ids[d.duplicate_of[i]]}
            yield Outcome(r, SET_CHECKS[d.checks[fate - 1]], scores, dup)
    if n != len(d.ids):
        raise DataError(
            f"the samples changed while filter read them ({len(d.ids)}, then {n}); rerun filter"
        )


def filter_records(
    rows: list[dict],
    cfg: FilterConfig,
    questions: dict[str, Question],
    eval_qs: list[Question],
    reasoning: Convention = Convention(),  # noqa: B008 - frozen
    bounds: bool = False,
) -> tuple[list[dict], list[dict], dict[str, dict]]:
    """The filter over rows in memory (tests, small sets): kept rows, rejected rows (with
    reason and detail) in input order, and scores by id. With `bounds`, a question whose pass
    rate is outside [cfg.min_pass_rate, cfg.max_pass_rate] loses its samples first."""
    decided = decide(lambda: rows, cfg, questions, eval_qs, reasoning, bounds=bounds)
    kept, rejected, scores = [], [], {}
    for o in outcomes(lambda: rows, decided):
        scores[o.row["id"]] = o.scores
        if o.reason is None:
            kept.append(o.row)
        else:
            rejected.append(o.rejected())
    return kept, rejected, scores
