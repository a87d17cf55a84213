"""The filter's checks: each record check is a plain function `(record, ctx) -> Verdict`; set
checks (dedup) and selection look at all survivors at once. Checks run in the configured order and
a record stops at the first that rejects it, so every input ends in exactly one of kept or
rejected, with its reason."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
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
    cfg: FilterConfig
    questions: dict[str, Question]
    eval_ngrams: dict[tuple[str, ...], str]
    eval_lengths: set[int] = field(default_factory=set)
    splits: dict[str, Split] = field(default_factory=dict)  # by sample id: trace and answer
    reasoning: Mode = "auto"
    tags: tuple[str, str] = TAGS

    def text(self, r: dict) -> str:
        """Sample `r`'s whole text, trace included (on its split, made once): what repetition,
        dedup and decontamination see, as generate's copy check does."""
        return inline_text(self.splits[r["id"]], self.tags)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def repetition_ratio(text: str, n: int) -> float:
    """Share of word n-grams that repeat an earlier one: 0 for fresh text, near 1 for loops."""
    toks = words(text)[:20000]
    grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def trim_after_answer(text: str) -> str:
    """Cut what follows the last answer line: the student should learn to stop there."""
    ends = [m.end() for m in _ANSWER_TAIL.finditer(text)]
    return text[: ends[-1]].rstrip() if ends else text.rstrip()


# --- record checks -------------------------------------------------------------------------------


def check_truncated(r: dict, ctx: Context) -> Verdict:
    return verify.truncated(r, ctx.splits[r["id"]], ctx.cfg.drop_truncated)


def check_format(r: dict, ctx: Context) -> Verdict:
    return verify.answer_format(r, ctx.splits[r["id"]], ctx.reasoning)


def check_correct(r: dict, ctx: Context) -> Verdict:
    return verify.correct(r, ctx.splits[r["id"]])


def check_length(r: dict, ctx: Context) -> Verdict:
    """The whole completion in tokens, then a trace and its answer apart, in words."""
    c = ctx.cfg
    n = int((r.get("usage") or {}).get("completion_tokens") or len(words(ctx.text(r))))
    s = ctx.splits[r["id"]]
    scores: dict[str, Any] = {"tokens": n}
    answer_words = len(words(s.answer))
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
    ratio = repetition_ratio(ctx.text(r), ctx.cfg.repetition_n)
    ok = ratio <= ctx.cfg.max_repetition
    return Verdict(ok, None if ok else "repetitive", {"repetition": round(ratio, 4)})


def check_decontaminate(r: dict, ctx: Context) -> Verdict:
    q = ctx.questions.get(r["question_id"])
    text = (q.question if q else "") + "\n" + ctx.text(r)
    toks = words(text)
    hits = set().union(*(ngrams(toks, n) for n in ctx.eval_lengths)) & ctx.eval_ngrams.keys()
    if not hits:
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


# --- set checks ----------------------------------------------------------------------------------


def _scope(r: dict, cfg: FilterConfig) -> str:
    return r["question_id"] if cfg.dedup_scope == "question" else "*"


def exact_dedup(rows: list[dict], texts: list[str], cfg: FilterConfig) -> dict[int, int]:
    """index -> index of the earlier row it duplicates (normalized text, within scope)."""
    from stages.filter.dedup import exact_duplicates  # numpy: only when dedup runs

    found = exact_duplicates(texts, [_scope(r, cfg) for r in rows])
    return {i: j for i, j in enumerate(found) if j is not None}


def near_dedup(rows: list[dict], texts: list[str], cfg: FilterConfig) -> dict[int, int]:
    from stages.filter.dedup import near_duplicates

    found = near_duplicates(
        texts,
        [_scope(r, cfg) for r in rows],
        threshold=cfg.near_threshold,
        shingle=cfg.shingle,
        num_perm=cfg.num_perm,
    )
    return {i: j for i, j in enumerate(found) if j is not None}


SetCheck = Callable[[list[dict], list[str], FilterConfig], dict[int, int]]
SET_CHECKS: dict[str, tuple[str, SetCheck]] = {
    "exact_dedup": ("exact_duplicate", exact_dedup),
    "near_dedup": ("near_duplicate", near_dedup),
}


def score(s: dict[str, Any]) -> float:
    """Higher is better: correct first, then clean format, then less repetition, then shorter."""
    return (
        2.0 * bool(s.get("correct"))
        + 1.0 * bool(s.get("format"))
        - float(s.get("repetition", 0.0))
        - 0.001 * float(s.get("tokens", 0))
    )


def select(rows: list[dict], scores: dict[str, dict], cfg: FilterConfig) -> dict[str, str]:
    """Ids dropped by selection, with why. A preferred teacher's samples, where a question has
    any, push out the others'; then best-of-n keeps the top scores, balanced takes each
    teacher's best in turn, and `all` applies only the cap."""
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_q[r["question_id"]].append(r)
    dropped: dict[str, str] = {}
    for group in by_q.values():
        if cfg.prefer_teacher and any(r.get("teacher") == cfg.prefer_teacher for r in group):
            others = [r for r in group if r.get("teacher") != cfg.prefer_teacher]
            dropped.update((r["id"], "other_teacher_preferred") for r in others)
            group = [r for r in group if r.get("teacher") == cfg.prefer_teacher]
        ranked = sorted(group, key=lambda r: -score(scores[r["id"]]))  # stable: ties keep order
        cut: list[dict] = []
        if cfg.selection == "best":
            cut = ranked[1:]
        elif cfg.selection == "balanced":
            n = cfg.per_question_cap or len({r.get("teacher", "") for r in group})
            cut = _in_turn(ranked)[n:]
        elif cfg.per_question_cap:
            cut = group[cfg.per_question_cap :]
        dropped.update((r["id"], "selection_cap") for r in cut)
    return dropped


def _in_turn(ranked: list[dict]) -> list[dict]:
    """Each teacher's best, then each one's second best, and so on."""
    by_t: dict[str, list[dict]] = defaultdict(list)
    for r in ranked:
        by_t[r.get("teacher", "")].append(r)
    turns = max(len(v) for v in by_t.values())
    return [v[i] for i in range(turns) for v in by_t.values() if i < len(v)]


def _within_pass_rate(
    r: dict, rates: dict[str, float], cfg: FilterConfig, reject: Callable[..., None]
) -> bool:
    rate = rates[r["question_id"]]
    if rate < cfg.min_pass_rate:
        reject(r, "too_hard", pass_rate=rate)
    elif rate > cfg.max_pass_rate:
        reject(r, "too_easy", pass_rate=rate)
    else:
        return True
    return False


def filter_records(
    rows: list[dict],
    cfg: FilterConfig,
    questions: dict[str, Question],
    eval_qs: list[Question],
    reasoning: Convention = Convention(),  # noqa: B008 - frozen
    pass_rates: dict[str, float] | None = None,
) -> tuple[list[dict], list[dict], dict[str, dict]]:
    """Returns kept rows, rejected rows (with reason and detail), and scores by id.

    With `pass_rates` (question id -> verified / sampled), a question outside
    [cfg.min_pass_rate, cfg.max_pass_rate] loses its samples first: too_hard, too_easy."""
    eval_ngrams: dict[tuple[str, ...], str] = {}
    if "decontaminate" in cfg.checks:
        for q in eval_qs:
            toks = words(q.question)
            # A question shorter than n counts whole, so a verbatim leak is never missed.
            for g in ngrams(toks, min(cfg.decontam_n, len(toks))):
                eval_ngrams.setdefault(g, q.id)
    ctx = Context(cfg, questions, eval_ngrams, {len(g) for g in eval_ngrams})
    ctx.splits = {r["id"]: reasoning.split(r) for r in rows}
    ctx.reasoning, ctx.tags = reasoning.mode, reasoning.tags
    scores: dict[str, dict[str, Any]] = {r["id"]: {} for r in rows}
    alive = list(rows)
    rejected: list[dict] = []

    def reject(r: dict, reason: str, **detail: Any) -> None:
        rejected.append({**r, "reason": reason, "scores": scores[r["id"]], **detail})

    if pass_rates is not None:
        alive = [r for r in alive if _within_pass_rate(r, pass_rates, cfg, reject)]
    for check in cfg.checks:
        survivors = []
        if check in RECORD_CHECKS:
            fn = RECORD_CHECKS[check]
            for r in alive:
                v = fn(r, ctx)
                scores[r["id"]].update(v.scores)
                if v.keep:
                    survivors.append(r)
                else:
                    reject(r, v.reason or check, **v.detail)
        else:
            reason, fn_set = SET_CHECKS[check]
            dups = fn_set(alive, [ctx.text(r) for r in alive], cfg)
            for i, r in enumerate(alive):
                if i in dups:
                    reject(r, reason, duplicate_of=alive[dups[i]]["id"])
                else:
                    survivors.append(r)
        alive = survivors
    dropped = select(alive, scores, cfg)
    kept = []
    for r in alive:
        scores[r["id"]]["score"] = round(score(scores[r["id"]]), 4)
        if r["id"] in dropped:
            reject(r, dropped[r["id"]])
        else:
            kept.append(r)
    return kept, rejected, scores


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
