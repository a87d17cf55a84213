"""filter: teacher samples -> the student's training set, with a reason for every drop.

Each record-level check is a plain function `(record, ctx) -> (keep, reason, scores)`; set-level
checks (dedup) and selection look at all survivors at once. Checks run in the configured order
and a record stops at the first check that rejects it, so every input ends in exactly one of
kept.jsonl / rejected.jsonl.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.answers import extract_answer, has_answer_line, is_correct
from pipeline.config import Config, FilterConfig, semantic
from pipeline.records import (
    DataError,
    atomic_write_json,
    atomic_write_jsonl,
    read_jsonl,
    schema_problem,
)
from pipeline.tasks import Question, load_task, render_messages, template_bytes
from stages.dedup import exact_duplicates, near_duplicates

NAME = "filter"
VERSION = 1
OUTPUTS = ["kept.jsonl", "rejected.jsonl", "report.json"]

Verdict = tuple[bool, str | None, dict[str, Any]]

_WORD = re.compile(r"\w+", re.UNICODE)
_ANSWER_TAIL = re.compile(r"(?im)^[^\n]*\b(?:final\s+)?answer\s*(?:is|:)[^\n]*$")


def key_parts(cfg: Config) -> dict[str, Any]:
    task = load_task(cfg.task)
    return {
        "config": {"filter": semantic(cfg.filter), "student_template": cfg.student_template},
        "extra": {
            "student_template": template_bytes(cfg.student_template),
            "eval_set": task.source_hash + ":" + str(len(task.eval)),
        },
    }


@dataclass
class Context:
    cfg: FilterConfig
    questions: dict[str, Question]
    eval_ngrams: dict[tuple[str, ...], str]
    eval_lengths: set[int] = field(default_factory=set)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    truncated = r.get("finish_reason") == "length"
    if truncated and ctx.cfg.drop_truncated:
        return False, "truncated", {"truncated": True}
    return True, None, {"truncated": truncated}


def check_format(r: dict, ctx: Context) -> Verdict:
    ok = has_answer_line(r["completion"])
    return ok, None if ok else "no_answer_line", {"format": ok}


def check_correct(r: dict, ctx: Context) -> Verdict:
    pred = extract_answer(r["completion"], r.get("answer_type", "numeric"))
    ok = pred is not None and is_correct(
        pred, str(r["gold"]), r.get("answer_type", "numeric"), r.get("choices") or None
    )
    scores = {"correct": ok, "answer": pred}
    if pred is None:
        return False, "no_answer", scores
    return ok, None if ok else "wrong_answer", scores


def check_length(r: dict, ctx: Context) -> Verdict:
    n = int((r.get("usage") or {}).get("completion_tokens") or len(words(r["completion"])))
    if n < ctx.cfg.min_tokens:
        return False, "too_short", {"tokens": n}
    if n > ctx.cfg.max_tokens:
        return False, "too_long", {"tokens": n}
    return True, None, {"tokens": n}


def check_repetition(r: dict, ctx: Context) -> Verdict:
    ratio = repetition_ratio(r["completion"], ctx.cfg.repetition_n)
    ok = ratio <= ctx.cfg.max_repetition
    return ok, None if ok else "repetitive", {"repetition": round(ratio, 4)}


def check_decontaminate(r: dict, ctx: Context) -> Verdict:
    q = ctx.questions.get(r["question_id"])
    text = (q.question if q else "") + "\n" + r["completion"]
    toks = words(text)
    hits = set().union(*(ngrams(toks, n) for n in ctx.eval_lengths)) & ctx.eval_ngrams.keys()
    if not hits:
        return True, None, {"contaminated": False}
    gram = min(hits)
    ctx.details[r["id"]] = {"match": " ".join(gram), "eval_question": ctx.eval_ngrams[gram]}
    return False, "contaminated", {"contaminated": True}


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


def exact_dedup(rows: list[dict], cfg: FilterConfig) -> dict[int, int]:
    """index -> index of the earlier row it duplicates (normalized text, within scope)."""
    found = exact_duplicates([r["completion"] for r in rows], [_scope(r, cfg) for r in rows])
    return {i: j for i, j in enumerate(found) if j is not None}


def near_dedup(rows: list[dict], cfg: FilterConfig) -> dict[int, int]:
    found = near_duplicates(
        [r["completion"] for r in rows],
        [_scope(r, cfg) for r in rows],
        threshold=cfg.near_threshold,
        shingle=cfg.shingle,
        num_perm=cfg.num_perm,
    )
    return {i: j for i, j in enumerate(found) if j is not None}


SET_CHECKS: dict[str, tuple[str, Callable[[list[dict], FilterConfig], dict[int, int]]]] = {
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


def select(rows: list[dict], scores: dict[str, dict], cfg: FilterConfig) -> set[str]:
    """Ids dropped by selection: best-of-n keeps the top scores, `all` applies only the cap."""
    cap = cfg.per_question_cap or (1 if cfg.selection == "best" else 0)
    if not cap:
        return set()
    by_q: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_q[r["question_id"]].append(r)
    dropped = set()
    for group in by_q.values():
        if cfg.selection == "best":
            group = sorted(group, key=lambda r: -score(scores[r["id"]]))
        dropped.update(r["id"] for r in group[cap:])
    return dropped


# --- the stage -----------------------------------------------------------------------------------


# What the checks read from a sample (generate writes more).
SAMPLE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "question_id": str,
    "completion": str,
    "gold": str,
}


def _validate(rows: list[dict], path: Path) -> None:
    for i, r in enumerate(rows, 1):
        problem = schema_problem(r, SAMPLE_FIELDS)
        if problem:
            raise DataError(f"{path}:{i}: {problem}; was it written by generate?")


def filter_records(
    rows: list[dict], cfg: FilterConfig, questions: dict[str, Question], eval_qs: list[Question]
) -> tuple[list[dict], list[dict], dict[str, dict], Context]:
    """Returns kept rows, rejected rows (with reason), scores by id, and the context."""
    eval_ngrams: dict[tuple[str, ...], str] = {}
    if "decontaminate" in cfg.checks:
        for q in eval_qs:
            toks = words(q.question)
            # A question shorter than n counts whole, so a verbatim leak is never missed.
            for g in ngrams(toks, min(cfg.decontam_n, len(toks))):
                eval_ngrams.setdefault(g, q.id)
    ctx = Context(cfg, questions, eval_ngrams, {len(g) for g in eval_ngrams})
    scores: dict[str, dict[str, Any]] = {r["id"]: {} for r in rows}
    alive = list(rows)
    rejected: list[dict] = []

    def reject(r: dict, reason: str, **detail: Any) -> None:
        rejected.append({**r, "reason": reason, "scores": scores[r["id"]], **detail})

    for check in cfg.checks:
        survivors = []
        if check in RECORD_CHECKS:
            fn = RECORD_CHECKS[check]
            for r in alive:
                keep, reason, s = fn(r, ctx)
                scores[r["id"]].update(s)
                if keep:
                    survivors.append(r)
                else:
                    reject(r, reason or check, **ctx.details.pop(r["id"], {}))
        else:
            reason, fn_set = SET_CHECKS[check]
            dups = fn_set(alive, cfg)
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
            reject(r, "selection_cap")
        else:
            kept.append(r)
    return kept, rejected, scores, ctx


def to_sft_row(r: dict, q: Question, s: dict, cfg: Config) -> dict:
    """TRL conversational prompt-completion; the prompt is the student's zero-shot one."""
    answer = s.get("answer") or extract_answer(r["completion"], r.get("answer_type", "numeric"))
    return {
        "prompt": render_messages(cfg.student_template, q),
        "completion": [{"role": "assistant", "content": trim_after_answer(r["completion"])}],
        "answer": answer,
        "gold": r["gold"],
        "question_id": r["question_id"],
        "sample_id": r["id"],
        "teacher": r.get("teacher", ""),
        "scores": s,
    }


def _histogram(values: list[float], bins: int = 10) -> dict[str, Any]:
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1.0
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / width))] += 1
    return {"edges": [round(lo + i * width, 4) for i in range(bins + 1)], "counts": counts}


def run(cfg: Config, inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    src = inputs["generate"] / "samples.jsonl"
    rows = list(read_jsonl(src))
    _validate(rows, src)
    task = load_task(cfg.task)
    questions = {q.id: q for q in task.train}
    kept, rejected, scores, _ = filter_records(rows, cfg.filter, questions, task.eval)
    missing_q = [r["question_id"] for r in kept if r["question_id"] not in questions]
    if missing_q:
        raise DataError(f"{src}: question '{missing_q[0]}' is not in the task's train split")
    sft = [to_sft_row(r, questions[r["question_id"]], scores[r["id"]], cfg) for r in kept]
    atomic_write_jsonl(out / "kept.jsonl", sft)
    atomic_write_jsonl(out / "rejected.jsonl", rejected)
    reasons = Counter(r["reason"] for r in rejected)
    all_scores = list(scores.values())
    per_q = Counter(r["question_id"] for r in kept)
    report = {
        "input": len(rows),
        "kept": len(kept),
        "rejected": len(rejected),
        "reasons": dict(reasons.most_common()),
        "checks": list(cfg.filter.checks),
        "truncated_seen": sum(bool(s.get("truncated")) for s in all_scores),
        "questions_with_kept": len(per_q),
        "questions_total": len({r["question_id"] for r in rows}),
        "histograms": {
            "tokens": _histogram([s["tokens"] for s in all_scores if "tokens" in s]),
            "repetition": _histogram([s["repetition"] for s in all_scores if "repetition" in s]),
            "kept_per_question": dict(sorted(Counter(per_q.values()).items())),
        },
        "contamination_matches": [
            {"id": r["id"], "match": r.get("match"), "eval_question": r.get("eval_question")}
            for r in rejected
            if r["reason"] == "contaminated"
        ][:100],
    }
    assert report["kept"] + report["rejected"] == report["input"], "a record was lost or doubled"
    atomic_write_json(out / "report.json", report)
    print(_table(report), file=sys.stderr)
    return {k: report[k] for k in ("input", "kept", "rejected", "reasons", "truncated_seen")} | {
        "questions_with_kept": report["questions_with_kept"],
        "seconds": round(time.monotonic() - t0, 2),
    }


def _table(report: dict[str, Any]) -> str:
    n = max(1, report["input"])
    lines = [
        f"filter: {report['kept']:,} kept of {report['input']:,} ({100 * report['kept'] / n:.1f}%)"
    ]
    for reason, c in report["reasons"].items():
        lines.append(f"  {reason:<18} {c:>7,}  {100 * c / n:5.1f}%")
    return "\n".join(lines)
